"""Trains the tiny ArithChain policy from scratch and ships it.

Prompt = `<bos>` + problem text + newline; target = the gold solution (one
computation per line, then `#### answer`) + `<eos>`; the loss is the masked
next-token cross-entropy on the target only. Intermediate Orbax checkpoints go
to `runs/<name>/checkpoints`; with `--ship` the final parameters, configs,
tokenizer and the training log (with held-out greedy results measured on the
shipped float16 parameters) are written to `qstar_jax/assets/tiny_policy/`.

The policy is trained on 2..6-step chains (`--task`) and shipped with the
default `ArithChainConfig` (6-step chains, the hardest part of the training
distribution), where greedy decoding is right about 58% of the time.

Usage (the shipped policy; about 50 minutes on 2 shared CPU cores):
  python experiments/train_tiny_policy.py --steps 2800 --batch-size 32 \
      --lr 2e-3 --warmup 200 --weight-decay 0.05 --max-len 152 --name final \
      --eval-n 1000 --eval-every 400 --checkpoint-every 400 \
      --max-checkpoints 10 --ship
  # The fast rollout policy of eta-MCTS (a 2-layer, 128-wide decoder):
  python experiments/train_tiny_policy.py --steps 2800 --batch-size 32 \
      --lr 2e-3 --warmup 200 --weight-decay 0.05 --max-len 152 --name fast \
      --hidden 128 --layers 2 --ffn 384 --eval-n 1000 --eval-every 400 \
      --checkpoint-every 400 --max-checkpoints 10 --ship \
      --asset-dir qstar_jax/assets/tiny_fast_policy
  # Re-evaluate / re-ship a finished run under another task config:
  python experiments/train_tiny_policy.py ... --skip-train --eval-task '{}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from qstar_jax.models.config import tiny  # noqa: E402
from qstar_jax.models.decoder import init_decoder  # noqa: E402
from qstar_jax.tasks import tiny_policy  # noqa: E402
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer  # noqa: E402
from qstar_jax.tasks.arithchain import (ArithChain, ArithChainConfig,  # noqa
                                        vocabulary_words)
from qstar_jax.training.losses import sft_arrays, sft_loss  # noqa: E402
from qstar_jax.training.trainer import TrainConfig, train  # noqa: E402

TEST_SAMPLE = 200  # The sample tests/test_tiny_policy.py re-evaluates.


def build_data(task: ArithChain, tokenizer: ArithTokenizer,
               max_len: int) -> dict[str, np.ndarray]:
    """SFT arrays for every training problem ([N, max_len])."""
    prompts, targets = [], []
    for p in task.problems("train"):
        prompts.append(tokenizer.encode(task.format_prompt(p), add_bos=True))
        targets.append(tokenizer.encode(task.format_solution(p),
                                        add_eos=True))
    return sft_arrays(prompts, targets, max_len=max_len,
                      pad_id=tokenizer.pad_id)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="tiny_policy")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--max-len", type=int, default=120)
    ap.add_argument("--num-train", type=int, default=200_000)
    ap.add_argument("--task", default='{"num_steps_min": 2}',
                    help="JSON overrides of ArithChainConfig for training "
                         "(default: 2..6 steps, wider than the shipped task)")
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--max-checkpoints", type=int, default=3)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-task", default="{}",
                    help="JSON overrides of ArithChainConfig for the "
                         "shipped (evaluated) task")
    ap.add_argument("--skip-train", action="store_true",
                    help="re-evaluate runs/<name> instead of training")
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--asset-dir", default=tiny_policy.ASSET_DIR,
                    help="where --ship writes the policy (default: the tiny "
                         "policy's; the fast rollout policy ships to "
                         "qstar_jax/assets/tiny_fast_policy)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    run_dir = os.path.join("runs", args.name)
    os.makedirs(run_dir, exist_ok=True)
    overrides = json.loads(args.task)
    if "operations" in overrides:
        overrides["operations"] = tuple(overrides["operations"])
    train_task_config = ArithChainConfig(**{"num_train": args.num_train,
                                            "seed": args.seed, **overrides})
    # The shipped task (ArithChainConfig defaults + --eval-task) is a subset
    # of the training distribution (here: only its longest, 6-step chains);
    # its test split is still disjoint from every training program because
    # the split is a hash of the program alone.
    eval_overrides = json.loads(args.eval_task)
    if "operations" in eval_overrides:
        eval_overrides["operations"] = tuple(eval_overrides["operations"])
    task_config = ArithChainConfig(**{"num_train": args.num_train,
                                      "seed": args.seed, **eval_overrides})
    task = ArithChain(task_config)
    tokenizer = ArithTokenizer(vocabulary_words())
    decoder_config = tiny(vocab_size=tokenizer.vocab_size,
                          hidden_size=args.hidden, num_layers=args.layers,
                          intermediate_size=args.ffn, max_seq_len=256)
    train_config = TrainConfig(
        learning_rate=args.lr, warmup_steps=args.warmup,
        total_steps=args.steps, weight_decay=args.weight_decay,
        batch_size=args.batch_size, grad_clip=1.0,
        checkpoint_every=args.checkpoint_every,
        max_checkpoints=args.max_checkpoints, log_every=50, seed=args.seed)
    print(f"params {decoder_config.num_parameters():,}  vocab "
          f"{tokenizer.vocab_size}", flush=True)
    log_path = os.path.join(run_dir, "metrics.jsonl")
    params_path = os.path.join(run_dir, tiny_policy.PARAMS_FILE)
    test = task.problems("test")
    if args.skip_train:  # Re-evaluate (and ship) a finished run.
        with open(os.path.join(run_dir, "train_task.json")) as f:
            stored = json.load(f)
        stored["operations"] = tuple(stored["operations"])
        if ArithChainConfig(**stored) != train_task_config:
            raise SystemExit("--task/--num-train/--seed differ from the run")
    else:
        train_model(args, train_task_config, tokenizer, decoder_config,
                    train_config, log_path, params_path)
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    history = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/accuracy" in r]
    train_time = _wall_time(history)
    print(f"trained {history[-1]['step']} steps, wall {train_time:.0f}s, "
          f"final loss {history[-1]['loss']:.4f}", flush=True)

    # Evaluate the parameters as shipped (float16 round trip).
    shipped = tiny_policy.load_params(decoder_config, params_path)
    t1 = time.perf_counter()
    sample = tiny_policy.evaluate_policy(shipped, tokenizer, task,
                                         test[:TEST_SAMPLE])
    full = tiny_policy.evaluate_policy(shipped, tokenizer, task,
                                       test[:args.eval_n])

    train_dist = None
    if task_config != train_task_config:  # Also on the training distribution.
        train_task = ArithChain(train_task_config)
        train_dist = tiny_policy.evaluate_policy(
            shipped, tokenizer, train_task,
            train_task.problems("test")[:args.eval_n])
        train_dist["by_steps"] = _by_steps(train_task.problems("test"),
                                           train_dist["correct"])
    eval_time = time.perf_counter() - t1
    for label, res in (("sample", sample), ("full", full)):
        print(f"{label}: n={res['n']} acc={res['accuracy']:.3f} "
              f"all_steps={res['all_steps_correct']:.3f} "
              f"step_acc={res['step_accuracy']:.3f} "
              f"first={res['first_step_accuracy']:.3f}", flush=True)
    for p, text in list(zip(test, full["texts"]))[:4]:
        print("---", p.question, "\n", text, "\n gold:", p.answer)

    summary = lambda r: {k: r[k] for k in (  # noqa: E731
        "n", "accuracy", "all_steps_correct", "step_accuracy",
        "first_step_accuracy")}
    log = {
        "train_wall_time_s": round(train_time, 1),
        "train_wall_time_note": "training loop incl. the periodic greedy "
                                "evaluations of eval_curve_test_sample",
        "eval_wall_time_s": round(eval_time, 1),
        "steps": history[-1]["step"],
        "final_loss": history[-1]["loss"],
        "final_token_accuracy": history[-1]["token_accuracy"],
        "loss_curve": [{"step": h["step"], "loss": round(h["loss"], 5),
                        "token_accuracy": round(h["token_accuracy"], 5),
                        "lr": h["lr"]}
                       for h in history[::max(1, len(history) // 60)]
                       + [history[-1]]],
        "eval_curve_test_sample": evals,
        "eval_curve_note": "greedy, first 200 test problems of the training "
                           "task (train_task), during training (float32)",
        "held_out": {
            "split": "test", "decoding": "greedy", "grader": "grading.grade "
            "(mode='hash')", "params": "float16 as shipped",
            "test_sample": {**summary(sample), "indices": [0, TEST_SAMPLE]},
            "eval": {**summary(full), "indices": [0, args.eval_n],
                     "accuracy_by_num_steps": _by_steps(test,
                                                        full["correct"])},
        },
        "held_out_training_distribution": None if train_dist is None else {
            "task": "train_task of config.json", "split": "test",
            **summary(train_dist), "indices": [0, args.eval_n],
            "accuracy_by_num_steps": train_dist["by_steps"]},
        "machine": {"platform": platform.platform(),
                    "cpus": os.cpu_count(), "jax": jax.__version__,
                    "backend": jax.default_backend()},
    }
    with open(os.path.join(run_dir, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    if args.ship:
        ship(args, decoder_config, task_config, train_task_config,
             train_config, tokenizer, params_path, log)


def train_model(args, task_config, tokenizer, decoder_config, train_config,
                log_path, params_path) -> None:
    """Trains from scratch (or resumes) and writes the run's parameters."""
    run_dir = os.path.dirname(log_path)
    task = ArithChain(task_config)
    with open(os.path.join(run_dir, "train_task.json"), "w") as f:
        json.dump(dataclasses.asdict(task_config), f)
    with open(os.path.join(run_dir, "command.txt"), "w") as f:
        f.write(" ".join(sys.argv) + "\n")
    t0 = time.perf_counter()
    data = build_data(task, tokenizer, args.max_len)
    print(f"data {data['tokens'].shape} in {time.perf_counter() - t0:.1f}s; "
          f"mean length {data['lengths'].mean():.1f}", flush=True)
    model = init_decoder(decoder_config, seed=args.seed)
    if not args.resume and os.path.exists(log_path):
        os.remove(log_path)

    test = task.problems("test")[:TEST_SAMPLE]

    def eval_fn(m):  # Greedy on the training task's test sample.
        res = tiny_policy.evaluate_policy(m, tokenizer, task, test)
        return {k: res[k] for k in ("accuracy", "all_steps_correct",
                                    "step_accuracy")}

    result = train(model, data, sft_loss, train_config,
                   checkpoint_dir=os.path.join(run_dir, "checkpoints"),
                   resume=args.resume, log_path=log_path, eval_fn=eval_fn,
                   eval_every=args.eval_every)
    tiny_policy.save_params(result.model, params_path)


def _by_steps(problems, correct: list[bool]) -> dict:
    """Accuracy per number of operations."""
    groups = {}
    for p, ok in zip(problems, correct):
        groups.setdefault(len(p.solution_steps) - 1, []).append(ok)
    return {str(k): {"n": len(v), "accuracy": float(np.mean(v))}
            for k, v in sorted(groups.items())}


def _wall_time(history: list[dict]) -> float:
    """Training seconds summed over (possibly resumed) runs of one log."""
    total, last = 0.0, 0.0
    for h in history:
        if h["elapsed_s"] < last:  # A resumed run restarted the clock.
            total += last
        last = h["elapsed_s"]
    return total + last


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def ship(args, decoder_config, task_config, train_task_config, train_config,
         tokenizer, params_path, log) -> None:
    """Writes the asset directory of the shipped policy."""
    out = args.asset_dir
    os.makedirs(out, exist_ok=True)
    shutil.copy(params_path, os.path.join(out, tiny_policy.PARAMS_FILE))
    tokenizer.save(os.path.join(out, "tokenizer.json"))
    config = {
        "decoder": dataclasses.asdict(decoder_config),
        "task": dataclasses.asdict(task_config),
        "train_task": dataclasses.asdict(train_task_config),
        "train": dataclasses.asdict(train_config),
        "tokenizer": "tokenizer.json (ArithTokenizer over "
                     "arithchain.vocabulary_words())",
        "params": f"{tiny_policy.PARAMS_FILE}: float16, '/'-joined "
                  "nnx.to_pure_dict paths",
        "seeds": {"task": task_config.seed, "model_init": args.seed,
                  "batch_order": train_config.seed},
        "max_len": args.max_len,
        "command": "python experiments/train_tiny_policy.py "
                   + " ".join(sys.argv[1:]),
        "train_command": _read(os.path.join(os.path.dirname(params_path),
                                            "command.txt")),
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"shipped to {out}", flush=True)


if __name__ == "__main__":
    main()
