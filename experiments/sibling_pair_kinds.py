"""Which sibling pairs the scores get wrong: a breakdown by sentence and error.

Reads the held-out candidate stores of `experiments/sibling_data.py` (same
--run-dir; 'valid' and 'test') and sorts every (right, wrong) pair of
sibling candidates by two things:

* the template of the sentence the step computes
  (`ArithChain.step_templates`: '{x} gives {q} {o} to {p}.' and so on);
* how the wrong candidate differs from the right one: 'operation' (same
  operands, another operation), 'operand' (another number read), 'result'
  (same computation, wrong result: an arithmetic slip) or 'other' (not a
  computation, an early answer line).

For each group: the number of pairs and the pairwise accuracy of the
policy's log-probability, of the safe calculator, of the two together and
of each critic (the shipped step critic `load_tiny_critics()['qvm']` unless
--critic names others), with and without the calculator. Analysis only:
the templates come from the problem's story parsed with the task's own
rules, which no search reads.

Usage:
  python experiments/sibling_pair_kinds.py --run-dir runs/siblings \\
      --out experiments/results/sibling_pair_kinds.json \\
      [--critic gives=runs/siblings/critics/pairwise_bce_gives]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

import numpy as np

from qstar_jax.learning import load_rollouts
from qstar_jax.learning.siblings import (candidate_tool_checks,
                                         score_siblings, sibling_arrays,
                                         unpack_candidates)
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_critics import load_critic, load_tiny_critics
from qstar_jax.tasks.tiny_policy import load_tiny_policy
from train_sibling_critics import TOOL_PENALTY

_STEP = re.compile(r"\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)\s*")


def error_kind(right: str, wrong: str) -> str:
    """How the wrong candidate's text differs from the right one's."""
    a, b = _STEP.fullmatch(right), _STEP.fullmatch(wrong)
    if not a or not b:
        return "other"
    a, b = a.groups(), b.groups()
    if a[:3] == b[:3]:
        return "result"
    if (a[0], a[2]) == (b[0], b[2]):
        return "operation"
    return "operand"


def pair_groups(task, tokenizer, ds, labels):
    """[(r, t, i, j, template, kind)] for every right i / wrong j pair."""
    split = "test" if ds.split == "test" else "train"
    problems = task.problems(split)
    out = []
    for r in range(labels.shape[0]):
        templates = None
        for t in range(labels.shape[1]):
            right = np.flatnonzero(labels[r, t] == 1.0)
            wrong = np.flatnonzero(labels[r, t] == 0.0)
            if not len(right) or not len(wrong):
                continue
            if templates is None:
                templates = task.step_templates(
                    problems[int(ds.problem_index[r])])
            # Candidates at t are step t + 1 (0-based) of the solution.
            template = (templates[t + 1] if t + 1 < len(templates)
                        else "answer line")
            text = [tokenizer.decode(ds.cand_tokens[r, t, k,
                                                    :ds.cand_lengths[r, t, k]])
                    for k in range(labels.shape[2])]
            for i in right:
                for j in wrong:
                    out.append((r, t, i, j, template,
                                error_kind(text[i], text[j])))
    return out


def accuracy(scores, pairs) -> float:
    """P(score right > score wrong), ties counting half."""
    s = np.array([[scores[r, t, i], scores[r, t, j]]
                  for r, t, i, j, *_ in pairs])
    return float(np.mean((s[:, 0] > s[:, 1]) + 0.5 * (s[:, 0] == s[:, 1])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--critic", action="append", default=[],
                        metavar="NAME=DIR",
                        help="a saved critic to break down (default: the "
                             "shipped qvm)")
    args = parser.parse_args()
    _, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    critics = {name: load_critic(path) for name, _, path in
               (c.partition("=") for c in args.critic)}
    critics = critics or {"qvm": load_tiny_critics()["qvm"]}
    report = {"command": "python experiments/sibling_pair_kinds.py "
                         + " ".join(sys.argv[1:])}
    for name in ("valid", "test"):
        path = os.path.join(args.run_dir, name)
        ds = load_rollouts(path)
        labels = np.load(os.path.join(path, "labels.npy"))
        pairs = pair_groups(task, tokenizer, ds, labels)
        logp = np.where(ds.cand_valid, ds.cand_log_probs, 0.0)
        tool = -TOOL_PENALTY * candidate_tool_checks(tokenizer, ds)
        data = sibling_arrays(ds, labels)
        scores = {"policy log-probability": logp, "calculator": tool,
                  "log-probability + calculator": logp + tool}
        for critic_name, critic in critics.items():
            critic_scores = unpack_candidates(
                data, score_siblings(critic, data, batch_size=64),
                ds.cand_valid.shape)
            scores[critic_name] = critic_scores
            scores[f"{critic_name} + calculator"] = critic_scores + tool
        groups = collections.defaultdict(list)
        for p in pairs:
            groups[("all", "all")].append(p)
            groups[("all", p[5])].append(p)
            groups[(p[4], p[5])].append(p)
        rows = []
        for (template, kind), members in sorted(
                groups.items(), key=lambda g: -len(g[1])):
            row = {"template": template, "error": kind,
                   "pairs": len(members),
                   **{k: round(accuracy(v, members), 4)
                      for k, v in scores.items()}}
            rows.append(row)
            print(name, json.dumps(row), flush=True)
        report[name] = rows
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
