"""Trains the ArithChain critics: a PRM and a QVM by each of the three methods.

Stages (each saved under --run-dir and skipped when already there, so a
killed run resumes where it stopped):

  1. rollouts: M solutions per training problem from the frozen tiny policy
     (temperature 0.9), split into steps and graded; the first
     --fqi-problems problems again with the policy's top-K candidate steps
     after every step (for the Bellman targets; candidates cost a proposer
     call per state, so FQI trains on this smaller set);
  2. completions: C policy completions from every intermediate state (the
     rollout pool: best-of-pool Q labels and Monte Carlo PRM labels), and
     the stronger solver's completion (`ArithChain.continue_written`);
  3. training, every critic starting from a copy of the policy's decoder
     with a zero head:
       prm          BCE on soft Monte Carlo labels (share of correct
                    completions from the state after the step);
       qvm_pool     MSE on best-of-pool labels;
       qvm_stronger MSE on the stronger solver's returns;
       qvm_fqi      fitted Q-iteration (MSE on Bellman targets over the
                    stored candidates, L rounds);
     prm and the two directly labelled QVMs are evaluated every half epoch
     and keep the parameters with the best validation AUC (early stopping);
  4. metrics on held-out rollouts (test problems) of every critic against
     the gold event "every step so far is correct" (accuracy, AUC, ECE,
     precision, recall: AlphaLLM's Table 8 metrics), during
     training (on half of the held-out rollouts, the validation half, in
     each critic's log) and at the end (on the other half, metrics.json);
     for QVMs also the AUC of the last step's Q against the rollout's
     graded outcome.

Usage:
  python experiments/train_critics.py --run-dir runs/critics
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from qstar_jax.learning import (FqiConfig, RolloutConfig, best_of_pool,
                                binary_metrics, collect_rollouts,
                                completion_returns, critic_arrays,
                                critic_loss, fitted_q_iteration,
                                monte_carlo_prm_labels,
                                step_scores, stronger_solver_returns,
                                transition_arrays)
from qstar_jax.learning.critic_runs import (RUN_CRITICS,
                                            critic_rollout_config,
                                            policy_critic, run_critic_path)
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_policy import (load_params_into, load_tiny_policy,
                                         save_params)
from qstar_jax.training.trainer import TrainConfig, restore_params, train

def stage_rollouts(args, policy, tokenizer, task):
    """Training rollouts (no candidates), the FQI rollouts (the first
    --fqi-problems training problems, with the policy's top-K candidates
    after every step) and the held-out test rollouts."""
    config = critic_rollout_config(rollouts=args.rollouts,
                                   candidates=args.candidates,
                                   seed=args.seed)
    plain = RolloutConfig(**{**vars(config), "num_candidates": 0})

    def collect(config, indices, split, name):
        return collect_rollouts(policy, tokenizer, task, indices, config,
                                split=split,
                                out_dir=os.path.join(args.run_dir, name))

    train_ds = collect(plain, np.arange(args.train_problems), "train",
                       "rollouts_train")
    fqi_ds = collect(config, np.arange(args.fqi_problems), "train",
                     "rollouts_fqi")
    test_ds = collect(plain, np.arange(args.test_problems) + args.eval_offset,
                      "test", "rollouts_test")
    return train_ds, fqi_ds, test_ds


def stage_completions(args, policy, tokenizer, task, ds):
    path = os.path.join(args.run_dir, "completions.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    pool, pool_valid = completion_returns(
        policy, tokenizer, task, ds, num_completions=args.completions,
        sampling=SamplingConfig(temperature=0.9), max_tokens=64,
        batch_size=128, seed=args.seed + 1)
    strong, strong_valid = stronger_solver_returns(task, tokenizer, ds)
    out = {"pool": pool, "pool_valid": pool_valid, "strong": strong,
           "strong_valid": strong_valid}
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
    return out


def labels(ds, comp) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(targets [R, S], mask [R, S]) of the PRM and the two direct QVMs."""
    reward, terminal, mask = transition_arrays(ds)
    own = np.broadcast_to(ds.outcome[:, None], reward.shape)
    prm, prm_mask = monte_carlo_prm_labels(comp["pool"], comp["pool_valid"],
                                           kind="soft")
    prm, prm_mask = np.asarray(prm), np.asarray(prm_mask)
    # At the last step the label is the rollout's own outcome.
    prm = np.where(terminal, reward, prm)
    prm_mask = (prm_mask | terminal) & mask
    pool = np.asarray(best_of_pool(comp["pool"], comp["pool_valid"], own))
    pool = np.where(terminal, reward, pool)
    strong = np.where(terminal | ~comp["strong_valid"],
                      np.where(terminal, reward, 0.0), comp["strong"])
    return {"prm": (prm, prm_mask), "qvm_pool": (pool, mask),
            "qvm_stronger": (strong, mask)}


def prefix_correct(ds) -> np.ndarray:
    """[R, S] bool: every step up to and including t is correct (the gold
    event that a step's PRM score and Q-value should rank)."""
    return np.cumprod(ds.step_correct, axis=1).astype(bool) & ds.step_mask()


def held_out_metrics(critic, ds, *, logits: bool) -> dict:
    """AlphaLLM Table 8 metrics of a critic's step scores on held-out
    rollouts against `prefix_correct` (Q-values are clipped to [0, 1])."""
    scores = step_scores(critic, ds.tokens, ds.lengths, ds.step_ends,
                         progress=False)
    mask = ds.step_mask()
    values = scores[mask] if logits else np.clip(scores[mask], 0, 1)
    m = binary_metrics(values, prefix_correct(ds)[mask].astype(np.float32),
                       scores_are_logits=logits)
    return {k: m[k] for k in ("accuracy", "auc", "ece", "precision",
                              "recall")}


def train_config(args, steps: int, every: int = 100) -> TrainConfig:
    return TrainConfig(learning_rate=args.lr, warmup_steps=min(50, steps // 5),
                       total_steps=steps, batch_size=args.batch_size,
                       weight_decay=0.0, checkpoint_every=every,
                       max_checkpoints=steps // every + 2, log_every=24,
                       seed=args.seed)


def best_step(log_path: str) -> tuple[int, float]:
    """(step, AUC) of the logged evaluation with the best validation AUC
    (the earliest on ties)."""
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    evals = [(r["eval/auc"], -r["step"]) for r in records
             if "eval/auc" in r]
    auc, neg_step = max(evals)
    return -neg_step, auc


def stage_train(args, name, policy, ds, lab, eval_ds, fqi_ds):
    path = run_critic_path(args.run_dir, name)
    critic = policy_critic(policy)
    if os.path.exists(path):
        return load_params_into(critic, path)
    ckpt = os.path.join(args.run_dir, name, "checkpoints")

    def eval_fn(model):
        return held_out_metrics(model, eval_ds, logits=name == "prm")

    if name == "qvm_fqi":
        ds = fqi_ds
        tokens = ds.tokens[:, :int(ds.lengths.max())]  # No padding columns.
        reward, terminal, mask = transition_arrays(ds)
        data = critic_arrays(tokens, ds.lengths, ds.step_ends,
                             np.zeros(mask.shape), mask)
        history = fitted_q_iteration(
            critic, data, ds.cand_tokens, ds.cand_lengths, ds.cand_valid,
            reward, terminal,
            FqiConfig(iterations=args.fqi_rounds, gamma=1.0,
                      train=train_config(args, args.fqi_steps),
                      score_batch=32), checkpoint_dir=ckpt,
            eval_fn=eval_fn)
    else:
        tokens = ds.tokens[:, :int(ds.lengths.max())]
        epoch = max(1, len(ds.tokens) // args.batch_size)
        targets, mask = lab[name]
        data = critic_arrays(tokens, ds.lengths, ds.step_ends, targets,
                             mask)
        kind = "bce" if name == "prm" else "mse"
        # Evaluated (and checkpointed) every half epoch.
        every = max(1, epoch // 2)
        config = train_config(args, round(args.epochs * epoch), every=every)
        log = os.path.join(args.run_dir, name, "log.jsonl")
        result = train(critic, data, critic_loss(kind), config,
                       checkpoint_dir=ckpt, resume=True, eval_fn=eval_fn,
                       eval_every=every, log_path=log)
        # Early stopping: keep the evaluation with the best validation AUC.
        step, auc = best_step(log)
        restore_params(critic, ckpt, step, config)
        history = result.history + [{"selected_step": step,
                                     "selected_eval_auc": auc}]
    save_params(critic, path, dtype=np.float32)
    with open(os.path.join(args.run_dir, name, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    return critic


def evaluate(critics: dict, ds) -> dict:
    """Held-out metrics of every critic on the test rollouts: against the
    gold prefix correctness of every step, and (QVMs) the AUC of the last
    step's Q against the rollout's graded outcome."""
    out = {}
    for name, critic in critics.items():
        out[name] = {"vs_prefix_correct": held_out_metrics(
            critic, ds, logits=name == "prm")}
        if name != "prm":
            scores = step_scores(critic, ds.tokens, ds.lengths, ds.step_ends,
                                 progress=False)
            final_q = scores[np.arange(len(scores)), ds.num_steps - 1]
            out[name]["auc_last_step_vs_outcome"] = binary_metrics(
                np.clip(final_q, 0, 1), ds.outcome)["auc"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--train-problems", type=int, default=3072)
    parser.add_argument("--fqi-problems", type=int, default=384,
                        help="the first F training problems also get "
                             "candidate steps; FQI trains on their rollouts")
    parser.add_argument("--test-problems", type=int, default=128,
                        help="held-out problems for critic metrics (after "
                             "the search evaluation's problems)")
    parser.add_argument("--eval-offset", type=int, default=1000)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--completions", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--fqi-rounds", type=int, default=7)
    parser.add_argument("--fqi-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=list(RUN_CRITICS))
    args = parser.parse_args()
    if args.fqi_problems > args.train_problems:
        parser.error("--fqi-problems must be <= --train-problems")
    os.makedirs(args.run_dir, exist_ok=True)
    with open(os.path.join(args.run_dir, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    train_ds, fqi_ds, test_ds = stage_rollouts(args, policy, tokenizer, task)
    comp = stage_completions(args, policy, tokenizer, task, train_ds)
    lab = labels(train_ds, comp)
    gold = prefix_correct(train_ds).astype(np.float32)
    stats = {"train_rollouts": int(len(train_ds.tokens)),
             "train_transitions": int(train_ds.step_mask().sum()),
             "fqi_rollouts": int(len(fqi_ds.tokens)),
             "train_outcome_rate": float(train_ds.outcome.mean()),
             "test_rollouts": int(len(test_ds.tokens)),
             "test_outcome_rate": float(test_ds.outcome.mean()),
             "label_means": {k: float(v[0][v[1]].mean())
                             for k, v in lab.items()},
             # How well each label itself ranks the gold event (its noise).
             "label_auc_vs_prefix_correct": {
                 k: binary_metrics(v[0][v[1]], gold[v[1]])["auc"]
                 for k, v in lab.items()}}
    print(json.dumps(stats, indent=1), flush=True)
    # Held-out rollouts: the first half validates (training-time metrics and
    # early stopping), the second half gives the reported metrics.
    half = len(test_ds.tokens) // 2
    eval_ds = test_ds.select(np.arange(half))
    report_ds = test_ds.select(np.arange(half, len(test_ds.tokens)))
    critics = {name: stage_train(args, name, policy, train_ds, lab, eval_ds,
                                 fqi_ds) for name in args.only}
    metrics = evaluate(critics, report_ds)
    with open(os.path.join(args.run_dir, "metrics.json"), "w") as f:
        json.dump({"data": stats, "critics": metrics}, f, indent=1,
                  default=float)
    print(json.dumps(metrics, indent=1, default=float))


if __name__ == "__main__":
    main()
