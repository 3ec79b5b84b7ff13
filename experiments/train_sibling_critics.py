"""Trains ArithChain critics on sibling contrasts and measures how well they
rank sibling steps.

Reads the labelled candidate stores of `experiments/sibling_data.py` (same
--run-dir) and trains one critic per --variant (the registry below: losses,
backbone, evidence, training data), each under <run-dir>/critics/<variant>/:
AdamW, batch 32 rollouts, evaluated every half epoch on the validation
pairs (training problems never trained on), keeping the evaluation with
the best validation pairwise accuracy (early stopping). Every variant is
then scored on the held-out test pairs; for critics that do not read the
policy's evidence, also `critic + beta * log-probability` with beta chosen
on validation. The policy's log-probability alone is the baseline.

Writes <run-dir>/sibling_results.json (or --out).

Usage:
  python experiments/train_sibling_critics.py --run-dir runs/siblings \\
      --variant listwise_bce --variant pairwise_bce
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
from flax import nnx

from qstar_jax.learning.arithchain_text import (STORY_PROBE_CLASSES,
                                                story_probe_targets)
from qstar_jax.learning.probes import (ProbedCritic, token_probe_loss,
                                       with_token_probe)
from qstar_jax.learning import (binary_metrics, critic_arrays, critic_loss,
                                final_outcome_labels, load_rollouts,
                                outcome_value_labels, step_scores)
from qstar_jax.learning.siblings import (candidate_tool_checks,
                                         EMPTY_SLOT, compact_candidates,
                                         contrast_sibling_arrays,
                                         pairwise_accuracy, score_siblings,
                                         sibling_arrays, sibling_loss,
                                         unpack_candidates)
from qstar_jax.models.config import tiny
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_critics import (CriticSpec, build_critic,
                                          load_critic, read_spec,
                                          round_to_stored, save_critic)
from qstar_jax.tasks.tiny_policy import load_tiny_policy
from qstar_jax.training.trainer import TrainConfig, restore_params, train

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Weights of the policy log-probability tried on validation."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    """One critic to train.

    Attributes:
      spec: what the critic is (role, backbone, evidence).
      labels: 'siblings' (the labelled candidate steps, `sibling_loss`),
        'value' (every state of a rollout takes the rollout's outcome) or
        'outcome' (the outcome at a finished solution's end), the last two
        trained with BCE on the on-policy training rollouts.
      pointwise, ranking, ranking_weight: the loss (`sibling_loss`).
      sources: training stores used ('train_policy', 'train_gold').
      lr: peak learning rate; epochs: passes over the training rows.
    """

    spec: CriticSpec
    labels: str = "siblings"
    pointwise: str | None = "bce"
    ranking: str | None = "listwise"
    ranking_weight: float = 1.0
    sources: tuple[str, ...] = ("train_policy", "train_gold")
    lr: float = 3e-4
    epochs: float = 2.0


QVM = CriticSpec(role="qvm", output="sigmoid")
WIDE = dict(vocab_size=323, hidden_size=384, num_layers=4, num_heads=12,
            num_kv_heads=4, head_dim=32, intermediate_size=1024,
            max_seq_len=256)
VARIANTS = {
    "bce": Variant(spec=QVM, ranking=None),
    "listwise": Variant(spec=CriticSpec(role="qvm"), pointwise=None),
    "pairwise": Variant(spec=CriticSpec(role="qvm"), pointwise=None,
                        ranking="pairwise"),
    "listwise_bce": Variant(spec=QVM),
    "pairwise_bce": Variant(spec=QVM, ranking="pairwise"),
    "listwise_bce_policy_only": Variant(spec=QVM, sources=("train_policy",)),
    "listwise_bce_gold_only": Variant(spec=QVM, sources=("train_gold",)),
    "evidence_listwise_bce": Variant(spec=dataclasses.replace(
        QVM, evidence=True)),
    "frozen_evidence_listwise_bce": Variant(
        spec=dataclasses.replace(QVM, evidence=True, backbone="frozen",
                                 head_hidden=256), lr=1e-3),
    "wide_listwise_bce": Variant(spec=dataclasses.replace(
        QVM, backbone="new", decoder=dataclasses.asdict(tiny(**WIDE)))),
    "value": Variant(spec=CriticSpec(role="value", output="sigmoid"),
                     labels="value", ranking=None,
                     sources=("train_policy",)),
    "orm": Variant(spec=CriticSpec(role="orm", output="sigmoid"),
                   labels="outcome", ranking=None,
                   sources=("train_policy",)),
}


def load_store(run_dir: str, name: str):
    """(rollouts, labels) of one store written by sibling_data.py."""
    path = os.path.join(run_dir, name)
    return load_rollouts(path), np.load(os.path.join(path, "labels.npy"))


def subsample(ds, labels, max_candidates: int | None, seed: int):
    """The first rollouts of a seeded permutation holding about
    `max_candidates` labelled candidates (all of them for None)."""
    if max_candidates is None:
        return ds, labels
    order = np.random.default_rng(seed).permutation(ds.num_rollouts)
    counts = np.isfinite(labels).sum(axis=(1, 2))[order]
    keep = order[:int(np.searchsorted(np.cumsum(counts), max_candidates))
                 + 1]
    keep = np.sort(keep)
    return ds.select(keep), labels[keep]


def merge_arrays(parts: list[dict]) -> dict:
    """Concatenates trainer data dicts, padding every trailing axis to the
    largest part (C, L, T; packed slots with their empty-slot fillers)."""
    fill = {**EMPTY_SLOT, "step_ends": -1, "probe_targets": -1}
    out = {}
    for k in parts[0]:
        shape = np.max([p[k].shape[1:] for p in parts], axis=0)
        out[k] = np.concatenate([
            np.pad(p[k], [(0, 0)] + [(0, int(w) - d) for w, d in
                                     zip(shape, p[k].shape[1:])],
                   constant_values=fill.get(k, 0)) for p in parts])
    return out


def accuracy_with_beta(scores, logp, labels, beta) -> tuple[float, int]:
    return pairwise_accuracy(scores + beta * logp, labels)


def evaluate(critic, data, ds, labels, *, beta_from=None) -> dict:
    """Pairwise accuracy of the critic (and with the log-probability)."""
    packed = score_siblings(critic, data, batch_size=64)
    scores = unpack_candidates(data, packed, ds.cand_valid.shape)
    acc, pairs = pairwise_accuracy(scores, labels)
    out = {"pairwise_accuracy": acc, "pairs": pairs}
    if critic.evidence is None:
        logp = np.where(ds.cand_valid, ds.cand_log_probs, 0.0)
        if beta_from is None:
            grid = {b: accuracy_with_beta(scores, logp, labels, b)[0]
                    for b in BETAS}
            out["beta"] = max(grid, key=lambda b: (grid[b], -b))
            out["beta_grid"] = grid
        else:
            out["beta"] = beta_from
        out["with_log_prob"] = accuracy_with_beta(scores, logp, labels,
                                                  out["beta"])[0]
    return out


def rollout_labels(ds, kind: str):
    """(targets, mask) [R, S] of the value ('value') or ORM ('outcome')."""
    if kind == "value":
        return outcome_value_labels(ds.outcome, ds.num_steps,
                                    ds.step_ends.shape[1])
    return final_outcome_labels(ds.outcome, ds.num_steps, ds.finished,
                                ds.step_ends.shape[1])


def rollout_metrics(critic, ds, kind: str) -> dict:
    """AlphaLLM Table 8 metrics of a value function or an ORM against the
    rollouts' graded outcomes (probabilities: the sigmoid of the scores
    unless the critic outputs probabilities already)."""
    targets, mask = rollout_labels(ds, kind)
    scores = step_scores(critic, ds.tokens, ds.lengths, ds.step_ends,
                         progress=False)
    m = binary_metrics(scores[mask], targets[mask],
                       scores_are_logits=critic.output != "sigmoid")
    return {k: m[k] for k in ("accuracy", "auc", "ece", "precision",
                              "recall")}


SYNTHETIC_OFFSET = 20_000
"""First training problem of the synthetic contrasts (after the problems of
the train_policy and train_gold stores)."""

SYNTHETIC_END = 100_000
"""Synthetic problems stay below this index: sibling_data.py's validation
problems (VALID_OFFSET) start here."""


GIVES = ("{x} gives {q} {o} to {p}.", "{p} gives {q} {o} to {x}.")
"""The two sentence templates that differ only in who gives to whom."""


def synthetic_problems(num_problems: int, *, gives_only: bool = False):
    """(problems, gives steps) of the first `num_problems` training problems
    from SYNTHETIC_OFFSET on (with `gives_only`, those whose story holds a
    "gives" sentence); the steps of each problem that compute a "gives"
    sentence come from `ArithChain.step_templates`, which labels training
    data and is never read by a search."""
    _, _, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    pool, problems, gives_steps = task.problems("train"), [], []
    index = SYNTHETIC_OFFSET
    while len(problems) < num_problems:
        if index >= SYNTHETIC_END:
            raise ValueError(f"{num_problems} synthetic problems would reach "
                             f"the validation problems ({SYNTHETIC_END}..)")
        p = pool[index]
        index += 1
        steps = [t for t, template in enumerate(task.step_templates(p))
                 if template in GIVES]
        if steps or not gives_only:
            problems.append(p)
            gives_steps.append(steps)
    return problems, gives_steps


def probe_targets(tokenizer, task, problems, tokens,
                  prompt_lengths=None) -> np.ndarray:
    """`arithchain_text.story_probe_targets` of rows that start with the
    problems' prompts (their token counts encoded here unless given)."""
    if prompt_lengths is None:
        prompt_lengths = np.array([len(tokenizer.encode(
            task.format_prompt(p), add_bos=True)) for p in problems])
    return story_probe_targets(tokenizer, [p.question for p in problems],
                               tokens, prompt_lengths)


def synthetic_rows(num_problems: int, *, gives_only: bool = False,
                   probe: bool = False) -> dict:
    """Gold states of fresh training problems, each gold step with its
    flipped and miscalculated versions (`contrast_sibling_arrays`).

    With `gives_only`, only problems whose story holds a "gives" sentence
    (the direction the policy misreads) and only the candidates of those
    sentences' steps (`synthetic_problems`). With `probe`, also
    'probe_targets' (`probe_targets`) for `probes.with_token_probe`.
    """
    _, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    problems, gives_steps = synthetic_problems(num_problems,
                                               gives_only=gives_only)
    data = contrast_sibling_arrays(task, tokenizer, problems, width=192)
    data["tokens"] = data["tokens"][:, :int(data["lengths"].max())]
    if probe:
        data["probe_targets"] = probe_targets(tokenizer, task, problems,
                                              data["tokens"])
    if gives_only:
        keep = np.stack([np.isin(group, steps) for group, steps
                         in zip(data["cand_group"], gives_steps)])
        keep &= data["mask"] > 0
        # At most two "gives" steps (6 candidates) a row: the branch width
        # C is the most any row keeps, and 93% of rows keep at most 6.
        keep &= np.cumsum(keep, axis=1) <= 6
        data = compact_candidates(data, keep)
    return data


def probe_rows(num_problems: int, *, gives_only: bool = False) -> dict:
    """The probe's own training rows: the prompts of the synthetic
    problems alone (no steps, no candidates) with their 'probe_targets'."""
    _, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    problems, _ = synthetic_problems(num_problems, gives_only=gives_only)
    rows = [tokenizer.encode(task.format_prompt(p), add_bos=True)
            for p in problems]
    tokens = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    lengths = np.array([len(r) for r in rows], np.int32)
    return {"tokens": tokens, "lengths": lengths,
            "probe_targets": probe_targets(tokenizer, task, problems,
                                           tokens, lengths)}


def training_data(args, variant):
    """(trainer data, loss function, labelled items) of a variant."""
    parts, count = [], 0
    for source in variant.sources:
        if source == "synthetic":
            data = synthetic_rows(args.synthetic_problems,
                                  gives_only=args.synthetic_gives_only,
                                  probe=args.probe_weight > 0)
            count += int(data["mask"].sum())
            parts.append(data)
            continue
        ds, labels = load_store(args.run_dir, source)
        share = (None if args.max_candidates is None
                 else args.max_candidates // len(variant.sources))
        ds, labels = subsample(ds, labels, share, args.seed)
        if variant.labels == "siblings":
            count += int(np.isfinite(labels).sum())
            part = sibling_arrays(ds, labels)
            part.pop("row"), part.pop("cand_index")
            parts.append(part)
        else:
            targets, mask = rollout_labels(ds, variant.labels)
            count += int(mask.sum())
            parts.append(critic_arrays(ds.tokens[:, :int(ds.lengths.max())],
                                       ds.lengths, ds.step_ends, targets,
                                       mask))
    if args.probe_weight > 0:     # Only synthetic rows have probe labels.
        for part in parts:
            part.setdefault("probe_targets", np.full(
                (len(part["tokens"]), 1), -1, np.int32))
    data = merge_arrays(parts)
    if variant.labels == "siblings":
        loss = sibling_loss(variant.pointwise, variant.ranking,
                            ranking_weight=variant.ranking_weight)
    else:
        loss = critic_loss("bce")
    if args.probe_weight > 0:
        loss = with_token_probe(loss, args.probe_weight)
    return data, loss, count


def pretrain_probe(args, model, out_dir: str) -> dict:
    """Trains the probed critic's backbone and probe alone on `probe_rows`
    (--probe-pretrain-steps, batch 64, lr --probe-lr; resumable under
    <out_dir>/probe_checkpoints) before its critic loss; returns the
    stage's config and last logged metrics."""
    data = probe_rows(args.probe_problems,
                      gives_only=args.synthetic_gives_only)
    config = TrainConfig(learning_rate=args.probe_lr,
                         warmup_steps=min(50, args.probe_pretrain_steps // 5),
                         total_steps=args.probe_pretrain_steps,
                         batch_size=64, weight_decay=0.0,
                         checkpoint_every=100, max_checkpoints=2,
                         log_every=25, seed=args.seed)
    result = train(model, data, token_probe_loss, config,
                   checkpoint_dir=os.path.join(out_dir,
                                               "probe_checkpoints"),
                   resume=True,
                   log_path=os.path.join(out_dir, "probe_log.jsonl"))
    last = result.history[-1] if result.history else {}
    return {"steps": args.probe_pretrain_steps, "problems": len(
        data["tokens"]), "lr": args.probe_lr, "batch_size": 64,
        "last": {k: last[k] for k in ("step", "probe_loss",
                                       "probe_accuracy") if k in last}}


def train_variant(args, name, variant, policy, valid, test) -> dict:
    out_dir = os.path.join(args.run_dir, "critics", name)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    data, loss, count = training_data(args, variant)
    critic = build_critic(variant.spec, policy, seed=args.seed)
    # With a token probe the trainer trains critic and probe as one
    # module; the critic is kept and saved without the probe.
    model = (ProbedCritic(critic, num_classes=len(STORY_PROBE_CLASSES),
                          rngs=nnx.Rngs(args.seed))
             if args.probe_weight > 0 else critic)
    probe_record = (pretrain_probe(args, model, out_dir)
                    if args.probe_pretrain_steps else None)
    epoch = max(1, len(data["tokens"]) // args.batch_size)
    steps = max(1, round(variant.epochs * epoch))
    every = args.eval_every or max(1, min(epoch, steps) // 2)
    config = TrainConfig(learning_rate=variant.lr,
                         warmup_steps=min(50, steps // 5), total_steps=steps,
                         batch_size=args.batch_size, weight_decay=0.0,
                         checkpoint_every=every,
                         max_checkpoints=steps // every + 2, log_every=25,
                         seed=args.seed)
    if variant.labels == "siblings":
        metric = "pairwise_accuracy"

        def measure(model, split, **kw):
            return evaluate(model, *split, **kw)
    else:
        metric = "auc"

        def measure(model, split, **kw):
            return rollout_metrics(model, split[1], variant.labels)

    def eval_fn(trained):
        return {metric: measure(getattr(trained, "critic", trained),
                                valid)[metric]}

    ckpt = os.path.join(out_dir, "checkpoints")
    log = os.path.join(out_dir, "log.jsonl")
    t0 = time.time()
    train(model, data, loss, config, checkpoint_dir=ckpt, resume=True,
          eval_fn=eval_fn, eval_every=every, log_path=log)
    with open(log) as f:
        records = [json.loads(line) for line in f]
    evals = [r for r in records if f"eval/{metric}" in r]
    best = max(evals, key=lambda r: (r[f"eval/{metric}"], -r["step"]))
    restore_params(model, ckpt, best["step"], config)
    round_to_stored(critic)
    v = measure(critic, valid)
    t = measure(critic, test, beta_from=v.get("beta"))
    result = {"variant": name, "spec": dataclasses.asdict(variant.spec),
              "labels": variant.labels,
              "loss": {"pointwise": variant.pointwise,
                       "ranking": variant.ranking,
                       "ranking_weight": variant.ranking_weight},
              "sources": list(variant.sources), "lr": variant.lr,
              "probe_weight": args.probe_weight,
              "probe_pretraining": probe_record,
              "epochs": variant.epochs, "train_rows": len(data["tokens"]),
              "train_labels": count, "steps": steps,
              "selected_step": best["step"], "selected_by": metric,
              "parameters": critic.backbone.config.num_parameters(),
              "train_seconds": round(time.time() - t0, 1),
              "command": "python experiments/train_sibling_critics.py "
                         + " ".join(sys.argv[1:]),
              "valid": v, "test": t}
    critic.output = variant.spec.output
    save_critic(critic, out_dir, variant.spec, {"result": result})
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def eval_store(run_dir, name):
    ds, labels = load_store(run_dir, name)
    return sibling_arrays(ds, labels), ds, labels


SAMPLE_ROLLOUTS = 96
"""Test rollouts of the recorded held-out sample the asset test rescores."""


def ship(args, pairs: list[str], test) -> None:
    """Copies trained variants into the package assets as shipped critics.

    Each --ship VARIANT:NAME writes qstar_jax/assets/tiny_critics/NAME/
    (params, config, training_log.json with the curve, the result and, on
    the recorded held-out sample, the pairwise accuracy or AUC and the
    first scores, measured on the shipped float16 parameters). The sample
    is the first SAMPLE_ROLLOUTS test rollouts, stored once as
    heldout_sample.npz beside the critics.
    """
    from qstar_jax.tasks.tiny_critics import ASSET_DIR
    test_data, test_ds, test_labels = test
    rows = np.arange(SAMPLE_ROLLOUTS)
    sample_ds, sample_labels = test_ds.select(rows), test_labels[rows]
    sample = sibling_arrays(sample_ds, sample_labels)
    targets, mask = rollout_labels(sample_ds, "value")
    os.makedirs(ASSET_DIR, exist_ok=True)
    np.savez_compressed(
        os.path.join(ASSET_DIR, "heldout_sample.npz"), labels=sample_labels,
        step_ends=sample_ds.step_ends, outcome=sample_ds.outcome,
        num_steps=sample_ds.num_steps, finished=sample_ds.finished,
        problem_index=sample_ds.problem_index,
        cand_valid=sample_ds.cand_valid, rollout_tokens=sample_ds.tokens,
        rollout_lengths=sample_ds.lengths, **sample)
    for item in pairs:
        variant, _, name = item.partition(":")
        src = os.path.join(args.run_dir, "critics", variant)
        critic = load_critic(src)
        with open(os.path.join(src, "result.json")) as f:
            result = json.load(f)
        with open(os.path.join(src, "log.jsonl")) as f:
            curve = [json.loads(line) for line in f]
        if result["labels"] == "siblings":
            packed = score_siblings(critic, sample, batch_size=32)
            scores = unpack_candidates(sample, packed,
                                       sample_ds.cand_valid.shape)
            acc, count = pairwise_accuracy(scores, sample_labels)
            recorded = {"pairwise_accuracy": acc, "pairs": count,
                        "first_scores": packed[0].tolist()}
        else:
            recorded = rollout_metrics(critic, sample_ds, result["labels"])
            recorded["first_scores"] = step_scores(
                critic, sample_ds.tokens[:1], sample_ds.lengths[:1],
                sample_ds.step_ends[:1], progress=False)[0].tolist()
        spec, _, config = read_spec(src)
        out = os.path.join(ASSET_DIR, name)
        save_critic(critic, out, spec, {
            "trained_as": variant,
            "data_command": "python experiments/sibling_data.py --run-dir "
                            + args.run_dir,
            "train_command": result["command"],
            "result": result})
        probe_path = os.path.join(src, "probe_log.jsonl")
        if os.path.exists(probe_path):      # The probe's own stage.
            with open(probe_path) as f:
                result = {**result, "probe_curve": [json.loads(line)
                                                    for line in f]}
        log = {"result": result, "curve": curve,
               "heldout_sample": {"rollouts": SAMPLE_ROLLOUTS,
                                  "file": "../heldout_sample.npz",
                                  **recorded}}
        with open(os.path.join(out, "training_log.json"), "w") as f:
            json.dump(log, f, indent=1)
        print(f"shipped {variant} as {out}", flush=True)


TOOL_PENALTY = 1e3
"""Subtracted from the score of a candidate the calculator refutes: every
refuted step ranks below every passing one, the score orders the rest."""


def ranking_report(args, names: list[str], splits: dict) -> dict:
    """Pairwise accuracy on each split of the policy's log-probability, the
    calculator, and each trained critic, alone and with the calculator."""
    _, tokenizer, _ = load_tiny_policy()
    out = {}
    critics = {n: load_critic(os.path.join(args.run_dir, "critics", n))
               for n in names}
    for split, (data, ds, labels) in splits.items():
        tool = -TOOL_PENALTY * candidate_tool_checks(tokenizer, ds)
        logp = np.where(ds.cand_valid, ds.cand_log_probs, 0.0)
        rows = {"policy log-probability": logp, "calculator": tool,
                "policy log-probability + calculator": logp + tool}
        for name, critic in critics.items():
            packed = score_siblings(critic, data, batch_size=64)
            scores = unpack_candidates(data, packed, ds.cand_valid.shape)
            rows[name] = scores
            rows[f"{name} + calculator"] = scores + tool
        out[split] = {}
        for row, scores in rows.items():
            acc, pairs = pairwise_accuracy(scores, labels)
            out[split][row] = {"pairwise_accuracy": acc, "pairs": pairs}
            print(split, row, round(acc, 4), pairs, flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        default=[])
    parser.add_argument("--ship", action="append", default=[],
                        metavar="VARIANT:NAME",
                        help="copy a trained variant (its directory name) "
                             "into qstar_jax/assets/tiny_critics/NAME")
    parser.add_argument("--max-candidates", type=int, default=None,
                        help="train on a seeded subset of about this many "
                             "labelled candidates (split over the sources)")
    parser.add_argument("--sources", nargs="+", default=None,
                        choices=("train_policy", "train_gold", "synthetic"),
                        help="override the variants' training data")
    parser.add_argument("--synthetic-problems", type=int, default=8192,
                        help="problems of the 'synthetic' source")
    parser.add_argument("--synthetic-gives-only", action="store_true",
                        help="synthetic problems only where the story holds "
                             "a 'gives' sentence")
    parser.add_argument("--probe-weight", type=float, default=0.0,
                        help="train a token probe of the story (each "
                             "sentence's role, each name: the person or "
                             "not) beside the critic with this weight "
                             "(synthetic rows only; 0: none)")
    parser.add_argument("--probe-pretrain-steps", type=int, default=0,
                        help="first train the probe and backbone alone for "
                             "this many steps on the synthetic problems' "
                             "prompts (needs --probe-weight)")
    parser.add_argument("--probe-problems", type=int, default=40000,
                        help="problems of the probe's pretraining rows")
    parser.add_argument("--probe-lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="validation (and checkpoint) every this many "
                             "steps (0: every half epoch, at least twice)")
    parser.add_argument("--lr", type=float, default=None,
                        help="override the variants' peak learning rate")
    parser.add_argument("--epochs", type=float, default=None,
                        help="override the variants' epochs")
    parser.add_argument("--suffix", default="",
                        help="appended to each variant's directory name")
    parser.add_argument("--report", nargs="*", default=None,
                        metavar="VARIANT",
                        help="write the ranking report of these trained "
                             "variants (with the log-probability and the "
                             "calculator) to --out and stop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.probe_pretrain_steps and not args.probe_weight > 0:
        parser.error("--probe-pretrain-steps needs --probe-weight > 0")
    policy, _, _ = load_tiny_policy()
    valid, test = (eval_store(args.run_dir, n) for n in ("valid", "test"))
    out_path = args.out or os.path.join(args.run_dir, "sibling_results.json")
    if args.report is not None:
        report = ranking_report(args, args.report,
                                {"valid": valid, "test": test})
        os.makedirs(os.path.dirname(os.path.abspath(out_path)),
                    exist_ok=True)
        with open(out_path, "w") as f:
            json.dump({"command": "python experiments/train_sibling_critics"
                       ".py " + " ".join(sys.argv[1:]), **report}, f,
                      indent=1)
        return
    results = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            results = json.load(f)
    for split, (_, ds, labels) in (("valid", valid), ("test", test)):
        acc, pairs = pairwise_accuracy(
            np.where(ds.cand_valid, ds.cand_log_probs, -np.inf), labels)
        results.setdefault("policy_log_prob", {})[split] = {
            "pairwise_accuracy": acc, "pairs": pairs}
    for name in args.variant:
        key = name + args.suffix
        variant = VARIANTS[name]
        if args.sources:
            variant = dataclasses.replace(variant,
                                          sources=tuple(args.sources))
        if args.epochs:
            variant = dataclasses.replace(variant, epochs=args.epochs)
        if args.lr:
            variant = dataclasses.replace(variant, lr=args.lr)
        results[key] = train_variant(args, key, variant, policy, valid,
                                     test)
        print(key, json.dumps({s: results[key][s] for s in ("valid",
                                                           "test")}),
              flush=True)
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    if args.ship:
        ship(args, args.ship, test)


if __name__ == "__main__":
    main()
