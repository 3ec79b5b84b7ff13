"""Training labels for the Q-value model and the PRM, as pure array functions.

Three ways to label a step (s_t, a_t) of a rollout dataset:

- `fqi_targets`: fitted Q-iteration. The Bellman target
  y = r + gamma * max_k Q(s_{t+1}, a_k) over the K candidate next steps that
  the current Q-value model scored, or y = r at a terminal step.
- `best_of_pool`: the best return among C rollouts that continue from s_{t+1},
  the trajectory's own continuation included (Q*'s "best of a pool").
- `monte_carlo_prm_labels`: the fraction (soft) or existence (hard) of correct
  completions among C rollouts from s_{t+1} (Math-Shepherd style PRM labels).

And the labels of AlphaLLM's other two critics, host-side NumPy:
`outcome_value_labels` (every state of a rollout takes its outcome: the value
function) and `final_outcome_labels` (the outcome at a finished solution's
end: the outcome reward model).

All are jit-compiled, work on fixed shapes and never loop in Python. A NaN
value anywhere a candidate or rollout is read counts as an invalid entry: it
is dropped, never propagated. `fqi_targets_numpy` is a plain loop with the
same semantics, the independent reference for tests and benchmarks.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class FqiTargets(NamedTuple):
    """Bellman targets and a data-health count.

    Attributes:
      targets: [N] float32 y = r + gamma * max over usable next_q, or r.
      nan_count: scalar int32, NaN entries of next_q that were marked valid
        on non-terminal transitions (the entries the max would have read);
        they were treated as invalid.
    """

    targets: jax.Array
    nan_count: jax.Array


@jax.jit
def fqi_targets(reward: jax.Array, terminal: jax.Array, next_q: jax.Array,
                next_valid: jax.Array, gamma: float | jax.Array
                ) -> FqiTargets:
    """Fitted Q-iteration targets y = r + gamma * max_{k valid} next_q.

    A transition takes y = r (no bootstrap) where it is terminal or where no
    candidate next step is usable. A candidate is usable when `next_valid` is
    True and its `next_q` is not NaN. All arithmetic is float32.

    Args:
      reward: [N] float32 reward r of each transition (s_t, a_t, s_{t+1}).
      terminal: [N] bool s_{t+1} ends the episode.
      next_q: [N, K] float32 Q(s_{t+1}, a_k) for the K candidate next steps.
      next_valid: [N, K] bool the candidate exists (padding is False).
      gamma: discount factor, a Python float or float32 scalar.

    Returns:
      FqiTargets(targets [N] float32, nan_count scalar int32).
    """
    reward = jnp.asarray(reward, jnp.float32)
    terminal = jnp.asarray(terminal, bool)
    next_q = jnp.asarray(next_q, jnp.float32)
    next_valid = jnp.asarray(next_valid, bool)
    gamma = jnp.asarray(gamma, jnp.float32)
    is_nan = jnp.isnan(next_q)
    usable = next_valid & ~is_nan
    best = jnp.max(jnp.where(usable, next_q, -jnp.inf), axis=-1,
                   initial=-jnp.inf)
    bootstrap = ~terminal & usable.any(axis=-1)
    safe_best = jnp.where(bootstrap, best, 0.0)
    # The barrier keeps XLA from contracting r + gamma * q into one fused
    # multiply-add, so the product is rounded to float32 as in the NumPy
    # reference and targets are bit-identical on every backend.
    discounted = jax.lax.optimization_barrier(gamma * safe_best)
    targets = jnp.where(bootstrap, reward + discounted, reward)
    nan_count = jnp.sum(is_nan & next_valid & ~terminal[:, None],
                        dtype=jnp.int32)
    return FqiTargets(targets, nan_count)


def fqi_targets_numpy(reward: np.ndarray, terminal: np.ndarray,
                      next_q: np.ndarray, next_valid: np.ndarray,
                      gamma: float) -> FqiTargets:
    """Reference `fqi_targets`: a plain Python loop over transitions.

    Same semantics and float32 arithmetic as `fqi_targets`, written without
    vectorisation so that it checks it independently.

    Args:
      reward: [N] float rewards.
      terminal: [N] bool.
      next_q: [N, K] float.
      next_valid: [N, K] bool.
      gamma: discount factor.

    Returns:
      FqiTargets(targets [N] np.float32 array, nan_count Python int).
    """
    reward = np.asarray(reward, np.float32)
    next_q = np.asarray(next_q, np.float32)
    next_valid = np.asarray(next_valid, bool)
    gamma32 = np.float32(gamma)
    targets = np.empty(len(reward), np.float32)
    nan_count = 0
    for i in range(len(reward)):
        targets[i] = reward[i]
        if terminal[i]:
            continue
        values = []
        for q, ok in zip(next_q[i], next_valid[i]):
            if not ok:
                continue
            if np.isnan(q):
                nan_count += 1
            else:
                values.append(q)
        if values:
            targets[i] = reward[i] + gamma32 * max(values)
    return FqiTargets(targets, nan_count)


@jax.jit
def best_of_pool(returns: jax.Array, valid: jax.Array,
                 own_return: jax.Array) -> jax.Array:
    """Q label of (s_t, a_t): the best return over the pool from s_{t+1}.

    The pool is the C rollouts sampled from s_{t+1} together with the
    trajectory's own continuation (which also continues from s_{t+1}), so
    the label is max(own_return, max over usable rollouts). It is never
    below the trajectory's own return and equals it when no rollout is
    usable. A rollout is usable where `valid` is True and its return is not
    NaN. All returns must be of (s_t, a_t), in the same units.

    Args:
      returns: [R, S, C] float32 return of step s of trajectory r when
        continued by rollout c.
      valid: [R, S, C] bool the rollout exists (padding is False).
      own_return: [R, S] float32 return of step s along trajectory r itself;
        a NaN here is propagated.

    Returns:
      [R, S] float32 labels.
    """
    returns = jnp.asarray(returns, jnp.float32)
    usable = jnp.asarray(valid, bool) & ~jnp.isnan(returns)
    pool = jnp.max(jnp.where(usable, returns, -jnp.inf), axis=-1,
                   initial=-jnp.inf)
    return jnp.maximum(jnp.asarray(own_return, jnp.float32), pool)


@functools.partial(jax.jit, static_argnames=("kind",))
def monte_carlo_prm_labels(returns: jax.Array, valid: jax.Array,
                           kind: str = "soft", threshold: float = 0.5
                           ) -> tuple[jax.Array, jax.Array]:
    """Monte Carlo PRM labels from completions of each step.

    A completion is usable where `valid` is True and its return is not NaN,
    and correct where it is usable and its return exceeds `threshold` (the
    returns are 0/1 graded outcomes, so the default 0.5 splits them).

    - 'soft': label = (correct completions) / (usable completions).
    - 'hard': label = 1.0 if any usable completion is correct, else 0.0.

    Steps with no usable completion get label 0.0 and mask False.

    Args:
      returns: [R, S, C] float32 outcome of completion c from step s of
        trajectory r.
      valid: [R, S, C] bool the completion exists.
      kind: 'soft' or 'hard' (static).
      threshold: a return above it is correct.

    Returns:
      (labels [R, S] float32 in [0, 1], mask [R, S] bool).

    Raises:
      ValueError: unknown `kind`.
    """
    if kind not in ("soft", "hard"):
        raise ValueError(f"kind must be 'soft' or 'hard', got {kind!r}")
    returns = jnp.asarray(returns, jnp.float32)
    usable = jnp.asarray(valid, bool) & ~jnp.isnan(returns)
    correct = usable & (returns > threshold)
    num_usable = usable.sum(axis=-1, dtype=jnp.int32)
    num_correct = correct.sum(axis=-1, dtype=jnp.int32)
    mask = num_usable > 0
    if kind == "soft":
        labels = num_correct.astype(jnp.float32) / jnp.maximum(num_usable, 1)
    else:
        labels = (num_correct > 0).astype(jnp.float32)
    return jnp.where(mask, labels, 0.0), mask


def outcome_value_labels(outcome: np.ndarray, num_steps: np.ndarray,
                         max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Value labels of every state of a rollout: its graded outcome.

    AlphaLLM's value function is trained on the states s_{t+1} (after every
    step t) of the policy's own rollouts with the rollout's outcome as the
    target, a one-sample Monte Carlo return of the policy from that state.

    Args:
      outcome: [R] float rollout outcomes in [0, 1].
      num_steps: [R] int steps per rollout.
      max_steps: S, the step axis of the dataset.

    Returns:
      targets [R, S] float32 (the outcome at every step) and mask [R, S]
      bool (the step exists).
    """
    mask = np.arange(max_steps)[None, :] < np.asarray(num_steps)[:, None]
    targets = np.where(mask, np.asarray(outcome, np.float32)[:, None], 0.0)
    return targets.astype(np.float32), mask


def final_outcome_labels(outcome: np.ndarray, num_steps: np.ndarray,
                         finished: np.ndarray,
                         max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcome-reward-model labels: the outcome at a finished solution's end.

    Args:
      outcome: [R] float; num_steps: [R] int; finished: [R] bool (the
        rollout ended its solution; a truncated one has no outcome label).
      max_steps: S.

    Returns:
      targets [R, S] float32 and mask [R, S] bool: only the last step of
      each finished rollout counts.
    """
    last = (np.arange(max_steps)[None, :]
            == np.asarray(num_steps)[:, None] - 1)
    mask = last & np.asarray(finished, bool)[:, None]
    targets = np.where(mask, np.asarray(outcome, np.float32)[:, None], 0.0)
    return targets.astype(np.float32), mask
