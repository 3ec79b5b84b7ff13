"""Sibling-contrast data for the ArithChain critics: candidate steps, labelled.

At every intermediate state of the rollouts, the tiny policy's top-K distinct
next steps (K = 4 of M = 8 samples at temperature 0.9, the distribution a
search sees), each labelled exactly by the stronger solver (the written
values continued correctly by `ArithChain.continue_written`, then graded).
Four stores under --run-dir, each a resumable chunked rollout store plus a
labels file:

  train_policy  on-policy rollouts of training problems [0, N)
  train_gold    the gold solutions of training problems [N, 2N) (correct
                states, where a search's real choices are made)
  valid         on-policy rollouts of training problems 100000.. (never
                trained on: early stopping and every choice)
  test          on-policy rollouts of test problems 1200.. (after the
                search evaluation's and the critics' held-out problems;
                reported only)

Usage:
  python experiments/sibling_data.py --run-dir runs/siblings
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from qstar_jax.learning import RolloutConfig, collect_rollouts
from qstar_jax.learning.siblings import candidate_labels
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_policy import load_tiny_policy

VALID_OFFSET = 100_000
TEST_OFFSET = 1200


def sibling_rollout_config(*, solutions: str = "policy",
                           num_rollouts: int = 4, seed: int = 0,
                           batch_size: int = 16) -> RolloutConfig:
    """The candidate distribution of the critics issue's sibling pairs:
    K = 4 distinct steps of M = 8 samples at temperature 0.9, steps of at
    most 12 tokens, 8 steps per rollout."""
    return RolloutConfig(
        num_rollouts=num_rollouts, solutions=solutions,
        sampling=SamplingConfig(temperature=0.9), max_tokens=96,
        prompt_width=96, max_steps=8, num_candidates=4, candidate_samples=8,
        max_step_tokens=12, batch_size=batch_size, state_batch_size=256,
        seed=seed)


def collect_labelled(policy, tokenizer, task, run_dir, name, indices, split,
                     config):
    """A rollout store with candidates and its labels file (both resumable)."""
    store = os.path.join(run_dir, name)
    ds = collect_rollouts(policy, tokenizer, task, indices, config,
                          split=split, out_dir=store)
    path = os.path.join(store, "labels.npy")
    if os.path.exists(path):
        labels = np.load(path)
    else:
        labels = candidate_labels(task, tokenizer, ds, progress=True)
        np.save(path + ".tmp.npy", labels)
        os.replace(path + ".tmp.npy", path)
    return ds, labels


def summary(ds, labels) -> dict:
    right, wrong = labels == 1.0, labels == 0.0
    mixed = right.any(-1) & wrong.any(-1)
    pairs = (right.sum(-1) * wrong.sum(-1)).sum()
    return {"rollouts": int(ds.num_rollouts),
            "states": int(ds.open_mask().sum()),
            "candidates": int(np.isfinite(labels).sum()),
            "right_share": float(np.nanmean(labels)),
            "mixed_states": int(mixed.sum()), "pairs": int(pairs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--train-problems", type=int, default=4096,
                        help="N: on-policy problems [0, N), gold [N, 2N)")
    parser.add_argument("--train-rollouts", type=int, default=2)
    parser.add_argument("--valid-problems", type=int, default=256)
    parser.add_argument("--test-problems", type=int, default=512)
    parser.add_argument("--eval-rollouts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.run_dir, exist_ok=True)
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    n = args.train_problems
    plan = [
        ("test", np.arange(args.test_problems) + TEST_OFFSET, "test",
         sibling_rollout_config(num_rollouts=args.eval_rollouts,
                                seed=args.seed)),
        ("valid", np.arange(args.valid_problems) + VALID_OFFSET, "train",
         sibling_rollout_config(num_rollouts=args.eval_rollouts,
                                seed=args.seed)),
        ("train_policy", np.arange(n), "train",
         sibling_rollout_config(num_rollouts=args.train_rollouts,
                                seed=args.seed, batch_size=64)),
        ("train_gold", np.arange(n, 2 * n), "train",
         sibling_rollout_config(solutions="gold",
                                num_rollouts=args.train_rollouts,
                                seed=args.seed, batch_size=64)),
    ]
    out = {"args": vars(args)}
    for name, indices, split, config in plan:
        ds, labels = collect_labelled(policy, tokenizer, task, args.run_dir,
                                      name, indices, split, config)
        out[name] = summary(ds, labels)
        print(name, json.dumps(out[name]), flush=True)
    with open(os.path.join(args.run_dir, "data_summary.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
