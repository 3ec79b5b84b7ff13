"""How well the critics rank sibling steps: the choice Q* makes at every node.

Held-out metrics such as AUC pool every step of every problem, so they reward
telling an early step of an easy problem from a late step of a hard one. A
search instead picks among the K candidate next steps of one state. This
script collects rollouts with the policy's top-K candidates after every step
on held-out test problems (after the search evaluation's problems), labels
each candidate with the stronger solver (is the answer right when the
written values are continued correctly), and reports for the policy's
log-probability and for every critic of `train_critics.py` the pairwise
accuracy P(score(right candidate) > score(wrong sibling)) over every state
with both (ties count 1/2; 0.5 is chance).

Usage:
  python experiments/sibling_ranking.py --run-dir runs/critics \
      --out experiments/results/sibling_ranking.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from qstar_jax.learning import (candidate_labels, collect_rollouts,
                                next_q_values, pairwise_accuracy)
from qstar_jax.learning.critic_runs import (RUN_CRITICS,
                                            critic_rollout_config,
                                            load_run_critic)
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_policy import load_tiny_policy


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--offset", type=int, default=1200,
                        help="first test problem (after the search "
                             "evaluation's and the critics' held-out ones)")
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    ds = collect_rollouts(policy, tokenizer, task,
                          np.arange(args.problems) + args.offset,
                          critic_rollout_config(rollouts=args.rollouts,
                                                candidates=args.candidates,
                                                seed=args.seed),
                          split="test", out_dir=os.path.join(
                              args.run_dir, "rollouts_siblings"))
    labels = candidate_labels(task, tokenizer, ds).astype(np.float64)
    scores = {"policy log-probability": ds.cand_log_probs}
    for name in RUN_CRITICS:
        scores[name] = next_q_values(
            load_run_critic(policy, args.run_dir, name), ds.tokens, ds.lengths,
            ds.step_ends, ds.cand_tokens, ds.cand_lengths, progress=False)
    rows = {}
    for name, score in scores.items():
        acc, pairs = pairwise_accuracy(score, labels)
        rows[name] = {"pairwise_accuracy": acc, "pairs": pairs}
        print(f"{name}: {acc:.3f} over {pairs} pairs", flush=True)
    result = {"args": vars(args), "candidates": int(np.isfinite(labels).sum()),
              "right_share": float(np.nanmean(labels)), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
