"""Training critics on rollout datasets: losses, predictions, fitted Q-iteration.

A critic reads one score per step boundary of a trajectory (`scores_at`), so
a rollout's step labels are regressed in one pass over it. The arrays the
trainer draws batches from (`critic_arrays`) are

  tokens [R, L], lengths [R]      the rollouts (prompt + solution),
  step_ends [R, S]                position of each step's last token (-1 pad),
  targets [R, S], mask [R, S]     the labels and which of them count.

`critic_loss('mse')` trains Q-value and value models, `critic_loss('bce')`
PRMs and ORMs (targets in [0, 1], the score is a logit).

Fitted Q-iteration (`fitted_q_iteration`) alternates the two halves of the
paper's method, both on device: targets y = r + gamma * max_a' Q_prev(s', a')
for every transition, with Q_prev scored over the stored top-K candidate
steps a' of s' in one pass per rollout (`next_q_values`: the rollout is
encoded once and the K candidates of each of its states run on top of its
prefix, `score_branches`), then a regression of Q onto y.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qstar_jax.learning.labels import fqi_targets
from qstar_jax.learning.rollouts import RolloutDataset, transitions
from qstar_jax.models.critic import Critic, score_branches, scores_at
from qstar_jax.sampling.states import pad_batch
from qstar_jax.training.losses import bce_loss, mse_loss
from qstar_jax.training.trainer import TrainConfig, TrainResult, train

LOSS_KINDS = ("mse", "bce")


def critic_arrays(tokens: np.ndarray, lengths: np.ndarray,
                  step_ends: np.ndarray, targets: np.ndarray,
                  mask: np.ndarray) -> dict[str, np.ndarray]:
    """The trainer's data dict, checked.

    Args:
      tokens: [R, L] int; lengths: [R]; step_ends: [R, S] (-1 past the
        last step); targets: [R, S] float; mask: [R, S] bool (entries that
        count; must be False where step_ends < 0).

    Returns:
      {'tokens', 'lengths', 'step_ends', 'targets', 'mask'} host arrays.

    Raises:
      ValueError: on mismatched shapes, NaN targets under the mask, or a
        masked-in step without a position.
    """
    r, s = step_ends.shape
    if targets.shape != (r, s) or mask.shape != (r, s) or \
            tokens.shape[0] != r or lengths.shape != (r,):
        raise ValueError(f"shapes disagree: tokens {tokens.shape}, lengths "
                         f"{lengths.shape}, step_ends {step_ends.shape}, "
                         f"targets {targets.shape}, mask {mask.shape}")
    mask = mask.astype(bool)
    if np.any(mask & (step_ends < 0)):
        raise ValueError("mask selects steps that do not exist")
    bad = int(np.sum(mask & ~np.isfinite(targets)))
    if bad:
        raise ValueError(f"{bad} masked-in targets are NaN or infinite")
    return {"tokens": tokens.astype(np.int32),
            "lengths": lengths.astype(np.int32),
            "step_ends": step_ends.astype(np.int32),
            "targets": np.where(mask, targets, 0.0).astype(np.float32),
            "mask": mask.astype(np.float32)}


def critic_loss(kind: str) -> Callable[[Critic, dict], tuple]:
    """`loss_fn(critic, batch)` for the trainer: MSE or BCE at step ends.

    The returned metrics are the loss and, for 'bce', the step accuracy of
    the score's sign against targets >= 0.5.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind {kind!r} not in {LOSS_KINDS}")

    def loss_fn(critic: Critic, batch: dict):
        scores = scores_at(critic, batch["tokens"], batch["lengths"],
                           batch["step_ends"])
        mask = batch["mask"]
        if kind == "mse":
            return mse_loss(scores, batch["targets"], mask), {}
        loss = bce_loss(scores, batch["targets"], mask)
        hit = (scores > 0) == (batch["targets"] >= 0.5)
        acc = jnp.sum(hit * mask) / jnp.maximum(mask.sum(), 1.0)
        return loss, {"step_accuracy": acc}

    return loss_fn


@jax.jit
def _scores_at(critic, tokens, lengths, step_ends):
    return scores_at(critic, tokens, lengths, step_ends)


def _batches(num: int, batch_size: int, progress: bool, desc: str):
    for start in tqdm(range(0, num, batch_size), disable=not progress,
                      desc=desc, leave=False):
        yield start, min(start + batch_size, num)


def step_scores(critic: Critic, tokens: np.ndarray, lengths: np.ndarray,
                step_ends: np.ndarray, *, batch_size: int = 64,
                progress: bool = True) -> np.ndarray:
    """Critic scores at every step end of R rollouts.

    Args:
      critic: the critic.
      tokens: [R, L]; lengths: [R]; step_ends: [R, S] (-1 padded).
      batch_size: rows per jitted call (the last call is padded).

    Returns:
      [R, S] float32 (0 where step_ends < 0).
    """
    out = []
    for lo, hi in _batches(len(tokens), batch_size, progress, "scoring"):
        rows = [pad_batch(a[lo:hi], batch_size)
                for a in (tokens, lengths, step_ends)]
        out.append(np.asarray(_scores_at(critic, *rows))[:hi - lo])
    return np.concatenate(out)


@jax.jit
def _next_q(critic, tokens, lengths, step_ends, cand_tokens, cand_lengths):
    r, s, k, t = cand_tokens.shape
    prefix = jnp.broadcast_to((step_ends + 1)[..., None], (r, s, k))
    prefix = jnp.maximum(prefix, 1).reshape(r, s * k)
    q = score_branches(critic, tokens, lengths,
                       cand_tokens.reshape(r, s * k, t),
                       cand_lengths.reshape(r, s * k), prefix)
    return q.reshape(r, s, k)


def next_q_values(critic: Critic, tokens: np.ndarray, lengths: np.ndarray,
                  step_ends: np.ndarray, cand_tokens: np.ndarray,
                  cand_lengths: np.ndarray, *, batch_size: int = 32,
                  progress: bool = True) -> np.ndarray:
    """Q(s_{t+1}, a') for the K stored candidates a' after every step t.

    The state after step t is the rollout's first step_ends[t] + 1 tokens;
    each rollout is encoded once and its S*K candidate steps run on top of
    the matching prefix (`score_branches` with per-branch prefix lengths).

    Args:
      critic: the Q-value model.
      tokens: [R, L]; lengths: [R]; step_ends: [R, S] (-1 padded).
      cand_tokens: [R, S, K, T] candidate next steps; cand_lengths:
        [R, S, K].
      batch_size: rollouts per jitted call.

    Returns:
      [R, S, K] float32 (meaningless where a candidate is not valid).
    """
    out = []
    for lo, hi in _batches(len(tokens), batch_size, progress, "next Q"):
        rows = [pad_batch(a[lo:hi], batch_size) for a in
                (tokens, lengths, step_ends, cand_tokens, cand_lengths)]
        out.append(np.asarray(_next_q(critic, *rows))[:hi - lo])
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FqiConfig:
    """Fitted Q-iteration settings.

    Attributes:
      iterations: L, rounds of (targets, regression). With Q_0 = 0 and a
        reward only at the last step, round l reaches l steps back from the
        end, so L >= the longest solution in steps propagates the outcome
        to every step.
      gamma: discount.
      train: the regression of each round (warm-started from the previous
        round's parameters; its step counter restarts every round).
      score_batch: rollouts per jitted next-Q call.
    """

    iterations: int = 7
    gamma: float = 1.0
    train: TrainConfig = TrainConfig()
    score_batch: int = 32

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")


def transition_arrays(ds: RolloutDataset
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rollouts' transitions (`rollouts.transitions`) as [R, S] arrays.

    Returns:
      reward [R, S] float32 (the outcome at each rollout's last step, 0
      before it), terminal [R, S] bool (the last step of a finished
      rollout), mask [R, S] bool (the step exists).
    """
    tr = transitions(ds)
    shape = ds.step_ends.shape
    reward = np.zeros(shape, np.float32)
    terminal = np.zeros(shape, bool)
    reward[tr.rollout, tr.step] = tr.reward
    terminal[tr.rollout, tr.step] = tr.terminal
    return reward, terminal, ds.step_mask()


def fitted_q_iteration(critic: Critic, data: dict[str, np.ndarray],
                       cand_tokens: np.ndarray, cand_lengths: np.ndarray,
                       cand_valid: np.ndarray, reward: np.ndarray,
                       terminal: np.ndarray, config: FqiConfig, *,
                       checkpoint_dir: str | None = None,
                       progress: bool = True, eval_fn=None,
                       eval_every: int = 0) -> list[dict]:
    """Trains `critic` in place by L rounds of fitted Q-iteration.

    Args:
      critic: the Q-value model (round 1 bootstraps from its current
        scores; a zero head gives Q_0 = 0).
      data: `critic_arrays` output (its 'targets' are replaced each round;
        its 'mask' selects the transitions).
      cand_tokens: [R, S, K, T]; cand_lengths: [R, S, K]; cand_valid:
        [R, S, K] the candidates a' of each s_{t+1}.
      reward: [R, S]; terminal: [R, S] bool (`transition_arrays`).
      config: the `FqiConfig`.
      checkpoint_dir: per-round trainer checkpoints go to
        `<dir>/round_<l>`, and a finished round's parameters are kept, so a
        killed run resumes in the round it stopped in.
      progress: progress bars.
      eval_fn, eval_every: passed to each round's `train`; with a
        checkpoint_dir, each round's metrics go to `<dir>/round_<l>/log.jsonl`.

    Returns:
      One record per round: mean target, NaN count, final training loss,
      and the round's last evaluation if `eval_fn` is given.
    """
    mask = data["mask"] > 0
    history = []
    for round_ in range(1, config.iterations + 1):
        round_dir = (os.path.join(checkpoint_dir, f"round_{round_}")
                     if checkpoint_dir else None)
        done_file = round_dir and os.path.join(round_dir, "done.json")
        if done_file and os.path.exists(done_file):
            result = train(critic, data, critic_loss("mse"), config.train,
                           checkpoint_dir=round_dir, resume=True,
                           progress=False)
            with open(done_file) as f:
                history.append(json.load(f))
            continue
        next_q = next_q_values(critic, data["tokens"], data["lengths"],
                               data["step_ends"], cand_tokens, cand_lengths,
                               batch_size=config.score_batch,
                               progress=progress)
        y = fqi_targets(jnp.asarray(reward.reshape(-1)),
                        jnp.asarray(terminal.reshape(-1)),
                        jnp.asarray(next_q.reshape(-1, next_q.shape[-1])),
                        jnp.asarray(cand_valid.reshape(-1,
                                                       next_q.shape[-1])),
                        config.gamma)
        targets = np.asarray(y.targets).reshape(reward.shape)
        data = dict(data, targets=np.where(mask, targets, 0.0)
                    .astype(np.float32))
        result: TrainResult = train(critic, data, critic_loss("mse"),
                                    config.train, checkpoint_dir=round_dir,
                                    resume=True, progress=progress,
                                    eval_fn=eval_fn, eval_every=eval_every,
                                    log_path=round_dir and os.path.join(
                                        round_dir, "log.jsonl"))
        losses = [h["loss"] for h in result.history if "loss" in h]
        evals = [h for h in result.history if "loss" not in h]
        record = {"round": round_, "mean_target": float(targets[mask].mean()),
                  "nan_count": int(y.nan_count),
                  "final_loss": losses[-1] if losses else float("nan"),
                  **(evals[-1] if evals else {})}
        history.append(record)
        if done_file:
            with open(done_file, "w") as f:
                json.dump(record, f)
    return history
