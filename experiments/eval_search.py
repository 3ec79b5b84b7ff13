"""Held-out ArithChain comparison: greedy, best-of-N and Q* with trained critics.

Reads the critics of `train_critics.py` (--run-dir) and searches the first
--problems test problems (none of them seen in training, none used for the
critics' held-out metrics; `--split train --offset F` picks unseen training
problems instead, a validation set) with

  * greedy step decoding of the policy;
  * best-of-N: N solutions sampled once (temperature 0.9) and reranked by
    the PRM (min over steps), by each QVM (Q of the last step), and by
    majority vote over their answers;
  * Q*: A* with g = min of PRM step scores (probabilities), h = each QVM,
    f = g + lambda * h, the top-K distinct steps of M samples per expansion
    (proposer temperature --temperature).

Every row reports answer accuracy and generated tokens per problem (every
sampled token counts, discarded samples included). Writes JSON (--out) and
prints a Markdown table.

Usage (the README's table; temperature and lambda chosen on the
validation set `--split train --offset 100000 --problems 128`):
  python experiments/eval_search.py --run-dir runs/critics \
      --out experiments/results/eval_search.json --temperature 0.3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qstar_jax.learning.critic_runs import load_run_critic
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig
from qstar_jax.search.astar import AStarConfig
from qstar_jax.search.baselines import (majority_vote, sample_solutions,
                                        solution_scores)
from qstar_jax.search.qstar import QStarConfig, QStarModels, qstar_search
from qstar_jax.search.tool_check import calculator_step_check
from qstar_jax.search.tree import trajectory_steps
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_critics import load_critic
from qstar_jax.tasks.tiny_policy import (encode_prompts, greedy_solutions,
                                         load_tiny_policy, stop_rule)

QVMS = ("qvm_fqi", "qvm_pool", "qvm_stronger")


def load_critics(args, policy) -> dict:
    """The critics by name: --critic NAME=DIR (saved by `save_critic`), or
    the PRM and QVMs of a `train_critics.py` run (--run-dir)."""
    if args.critic:
        out = {}
        for item in args.critic:
            name, _, path = item.partition("=")
            out[name] = load_critic(path)
        return out
    return {name: load_run_critic(policy, args.run_dir, name)
            for name in ("prm",) + tuple(args.qvms)}


def critic_kind(name: str, critic) -> str:
    """How best-of-N reads a critic: 'prm' (min over step scores) for PRMs,
    value functions and sibling-trained QVMs with probability outputs, 'qvm'
    (the last step) for value-scaled QVMs."""
    return "prm" if name == "prm" or critic.output == "sigmoid" else "qvm"


def _keys(seed: int, stream: int, n: int) -> jax.Array:
    base = jax.random.fold_in(jax.random.key(seed), stream)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def best_of_n_rows(policy, critics, tokenizer, task, problems, tokens,
                   lengths, stop, args) -> dict:
    """Best-of-N rows (PRM, each QVM, majority vote) for every N in args.n.

    max(N) solutions are sampled once per problem; best-of-n reranks the
    first n of them (each sample has its own random stream, so the first n
    are n independent samples).
    """
    n_max = max(args.n)
    sample = jax.jit(lambda t, l, k: sample_solutions(
        policy, t, l, k, stop, num_samples=n_max, max_tokens=80,
        sampling=SamplingConfig(temperature=0.9)))
    score = jax.jit(solution_scores, static_argnames=("kind", "aggregation"))
    keys = _keys(args.seed, 1, len(problems))
    texts, lens, scores = [], [], {name: [] for name in critics}
    b = args.batch
    for s in tqdm(range(0, len(problems), b), desc="best-of-N"):
        sols = sample(tokens[s:s + b], lengths[s:s + b], keys[s:s + b])
        cont = np.asarray(sols.continuations.tokens)
        cont_len = np.asarray(sols.continuations.lengths)
        lens.append(cont_len)
        texts += [[tokenizer.decode(cont[i, j, :cont_len[i, j]])
                   for j in range(n_max)] for i in range(len(cont))]
        for name, critic in critics.items():
            if critic.evidence is not None:
                continue  # Needs per-step policy log-probabilities.
            sc = np.asarray(score(critic, sols, kind=critic_kind(name, critic),
                                  aggregation="min"))
            scores[name].append(np.where(np.isnan(sc), -np.inf, sc))
    lens = np.concatenate(lens)
    scores = {k: np.concatenate(v) for k, v in scores.items() if v}
    correct = np.array([[task.reward(p, t) == 1.0 for t in row]
                        for p, row in zip(problems, texts)])
    answers = [[task.extract_answer(t) for t in row] for row in texts]
    rows = {}
    for n in args.n:
        spent = float(lens[:, :n].sum(axis=1).mean())
        for name, sc in scores.items():
            pick = np.argmax(sc[:, :n], axis=1)
            rows[f"best-of-{n} ({name})"] = {
                "accuracy": float(correct[np.arange(len(pick)), pick].mean()),
                "tokens_per_problem": spent}
        voted = []
        for i, row in enumerate(answers):
            winner = majority_vote(row[:n])
            voted.append(next((correct[i, j] for j in range(n)
                               if row[j] == winner), correct[i, 0]))
        rows[f"best-of-{n} (majority vote)"] = {
            "accuracy": float(np.mean(voted)), "tokens_per_problem": spent}
        rows[f"pass@{n} (oracle)"] = {
            "accuracy": float(correct[:, :n].any(axis=1).mean()),
            "tokens_per_problem": spent}
    return rows


def qstar_row(policy, prm, qvm, tokenizer, task, problems, tokens, lengths,
              stop, args, lam: float, max_expansions: int) -> dict:
    """Q* with the PRM for g and one QVM for h, f = g + lam * h."""
    config = QStarConfig(
        search=AStarConfig(num_nodes=args.num_nodes,
                           max_expansions=max_expansions,
                           num_trajectories=1, lam=lam,
                           aggregation="min", heuristic="edge"),
        proposer=ProposerConfig(num_steps=args.k, num_samples=args.m,
                                max_step_tokens=12,
                                sampling=SamplingConfig(
                                    temperature=args.temperature)),
        state_width=160,
        tool_check=(calculator_step_check(tokenizer) if args.tool_weight
                    else None),
        tool_weight=args.tool_weight)
    models = QStarModels(policy=policy, prm=prm, qvm=qvm)
    search = jax.jit(qstar_search, static_argnames="config")
    keys = _keys(args.seed, 2, len(problems))
    correct, spent, expansions, found = 0, 0, 0, 0
    b = args.batch
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(problems), b), desc="Q*"):
        out = search(models, tokens[s:s + b], lengths[s:s + b],
                     keys[s:s + b], stop, config=config)
        out = jax.device_get(out)
        spent += int(out.stats.generated_tokens.sum())
        expansions += int(out.stats.expansions.sum())
        for i in range(len(out.best)):
            best = int(out.best[i])
            if best < 0:
                continue
            found += 1
            text = tokenizer.decode(sum(trajectory_steps(out.tree, i, best),
                                        []))
            correct += task.reward(problems[s + i], text) == 1.0
    n = len(problems)
    return {"accuracy": correct / n, "tokens_per_problem": spent / n,
            "expansions_per_problem": expansions / n,
            "found_a_solution": found / n,
            "seconds": time.perf_counter() - t0}


def baseline_rows(policy, critics, tokenizer, task, problems, tokens,
                  lengths, stop, args) -> dict:
    """Greedy and best-of-N rows."""
    greedy = greedy_solutions(policy, tokenizer, task, problems)
    rows = {"greedy": {
        "accuracy": float(np.mean([task.reward(p, t) == 1.0
                                   for p, t in zip(problems, greedy)])),
        "tokens_per_problem": float(np.mean(
            [len(tokenizer.encode(t)) for t in greedy]))}}
    rows.update(best_of_n_rows(policy, critics, tokenizer, task, problems,
                               tokens, lengths, stop, args))
    return rows


def plot_rows(rows: dict, path: str, n: int) -> None:
    """Accuracy (95% Wilson interval) against generated tokens per problem;
    best-of-N and majority vote rows joined across N, Q* rows per setting
    joined across budgets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qstar_jax.learning.metrics import wilson_interval
    series = {}
    for name, row in rows.items():
        if name.startswith("pass@"):
            continue
        key = name
        if name.startswith("best-of-"):
            key = "best-of-N " + name.split(" ", 1)[1]
        elif " expansions" in name:
            key = re.sub(r", \d+ expansions", "", name)
        series.setdefault(key, []).append(
            (row["tokens_per_problem"], row["accuracy"]))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, points in sorted(series.items()):
        points.sort()
        x = [p[0] for p in points]
        y = [100 * p[1] for p in points]
        lo, hi = zip(*(wilson_interval(p[1] * n, n) for p in points))
        err = [[100 * (p[1] - a) for p, a in zip(points, lo)],
               [100 * (b - p[1]) for p, b in zip(points, hi)]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=key)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel(f"accuracy (%), {n} problems, 95% interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None,
                        help="a train_critics.py run (its PRM and QVMs)")
    parser.add_argument("--critic", action="append", default=[],
                        metavar="NAME=DIR",
                        help="a saved critic (tiny_critics.save_critic); "
                             "replaces --run-dir")
    parser.add_argument("--qstar", action="append", default=[],
                        metavar="PRM:QVM",
                        help="a Q* row with critic PRM for g and QVM for h "
                             "(with --critic; default: PRM 'prm' with each "
                             "of --qvms)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--problems", type=int, default=512)
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="'train' with an --offset past the critics' "
                             "training problems gives a validation set "
                             "(for choosing lambda and the temperature)")
    parser.add_argument("--offset", type=int, default=0,
                        help="first problem of the split")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16],
                        help="best-of-N sample counts")
    parser.add_argument("--k", type=int, default=4, help="Q* top-K steps")
    parser.add_argument("--m", type=int, default=8,
                        help="Q* samples per expansion")
    parser.add_argument("--temperature", type=float, default=0.3,
                        help="sampling temperature of Q*'s proposer (0.3: "
                             "the best on the validation set)")
    parser.add_argument("--lam", type=float, nargs="+", default=[1.0],
                        help="lambda of f = g + lambda * h; several values "
                             "give one row each (a sweep)")
    parser.add_argument("--num-nodes", type=int, default=64)
    parser.add_argument("--max-expansions", type=int, nargs="+",
                        default=[20],
                        help="Q* expansion budgets (one row each)")
    parser.add_argument("--tool-weight", type=float, default=0.0,
                        help="Q*: subtract this from the PRM and QVM "
                             "scores of a step the safe calculator refutes "
                             "(0: no tool)")
    parser.add_argument("--tag", default="",
                        help="appended to the Q* row names (to keep rows "
                             "of runs with other settings apart)")
    parser.add_argument("--plot", default=None,
                        help="write a PNG of accuracy against generated "
                             "tokens per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qvms", nargs="*", default=list(QVMS),
                        help="QVMs searched with Q* (and reranked)")
    parser.add_argument("--skip-baselines", action="store_true",
                        help="only the Q* rows")
    args = parser.parse_args()
    if args.problems % args.batch:
        parser.error("--problems must be a multiple of --batch")
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    problems = list(task.problems(args.split))[
        args.offset:args.offset + args.problems]
    tokens, lengths = encode_prompts(tokenizer, task, problems, width=96)
    stop = stop_rule(tokenizer)
    if not args.critic and args.run_dir is None:
        parser.error("give --critic NAME=DIR or --run-dir")
    critics = load_critics(args, policy)
    pairs = ([tuple(p.split(":")) for p in args.qstar] if args.qstar
             else [("prm", name) for name in args.qvms])

    rows = {}
    if os.path.exists(args.out):
        # Rows of an earlier run on the same problems and seed are kept (so
        # QVMs can be evaluated as they finish training); rows computed now
        # replace theirs (every row is deterministic given the seed).
        with open(args.out) as f:
            earlier = json.load(f)
        same = ("problems", "seed", "split", "offset")
        if all(earlier["args"].get(k, v) == v for k, v in
               ((k, getattr(args, k)) for k in same)):
            rows = earlier["rows"]
    if not args.skip_baselines:
        rows.update(baseline_rows(policy, critics, tokenizer, task,
                                  problems, tokens, lengths, stop, args))
    for prm, qvm in pairs:
        for lam, budget in itertools.product(args.lam, args.max_expansions):
            label = "PRM + " + qvm if prm == "prm" else f"{prm} + {qvm}"
            swept = ([f"lambda={lam:g}"] if len(args.lam) > 1 else []) + (
                [f"{budget} expansions"] if len(args.max_expansions) > 1
                else [])
            row = f"Q* ({', '.join([label] + swept)}){args.tag}"
            rows[row] = {**qstar_row(
                policy, critics[prm], critics[qvm], tokenizer, task,
                problems, tokens, lengths, stop, args, lam, budget),
                "lambda": lam, "temperature": args.temperature, "k": args.k,
                "m": args.m, "max_expansions": budget,
                "tool_weight": args.tool_weight}
            print(row, rows[row], flush=True)
    result = {"problems": args.problems, "args": vars(args), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if args.plot:
        plot_rows(rows, args.plot, len(problems))
    print("| method | accuracy | generated tokens / problem |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {100 * row['accuracy']:.1f}% | "
              f"{row['tokens_per_problem']:.0f} |")


if __name__ == "__main__":
    main()
