"""Completions of the open states of a rollout dataset, and their returns.

The labels of "best of a rollout pool" and "completion by a stronger policy"
(and the Monte Carlo PRM labels) are graded completions of every open state
s_{t+1} of a `RolloutDataset`: `completion_returns` samples C completions
with a decoder (the policy itself, or a stronger one with greedy sampling),
`stronger_solver_returns` continues every state with ArithChain's gold
solver that trusts the written values. Keys follow
`qstar_jax.learning.rollouts.derive_keys` (stream COMPLETION_STREAM), so
results do not depend on batching.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from qstar_jax.learning.rollout_data import RolloutDataset
from qstar_jax.learning.rollouts import (COMPLETION_STREAM, _decode,
                                         _finish_cut, _Masks, _sample,
                                         _state_rows, default_stop_rule,
                                         derive_keys)
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling import states
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.states import pad_batch

__all__ = ["CompletionBatch", "completion_returns", "completion_text",
           "iter_completions", "stronger_solver_returns",
           "stronger_solver_reward"]


class CompletionBatch(NamedTuple):
    """C completions of n open states s_{t+1} of a dataset.

    Attributes:
      rollout: [n] int32 row r; step: [n] int32 step t.
      tokens: [n, C, T] int32 completion tokens (pad after the length).
      lengths: [n, C] int32.
    """

    rollout: np.ndarray
    step: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray


def iter_completions(policy: Decoder, ds: RolloutDataset, stop: StopRule, *,
                     num_completions: int, sampling: SamplingConfig,
                     max_tokens: int, batch_size: int, seed: int,
                     pad_id: int = 0, progress: bool = True
                     ) -> Iterator[CompletionBatch]:
    """Samples C completions of every open state s_{t+1}, batch by batch.

    State (r, t) is keyed by (seed, COMPLETION_STREAM, problem, sample, t);
    completion c by the sampler's fold_in of c. The policy must share the
    dataset's tokenizer.

    Args:
      policy: the decoder that completes (the policy itself, or a stronger
        one with greedy sampling).
      ds: the rollouts; open states are `ds.open_mask()`.
      stop: end tokens stop a completion (delimiters do not).
      num_completions: C; sampling: how tokens are drawn; max_tokens: T.
      batch_size: states per jitted call (the last batch is padded).
      seed: root of the keys.
      pad_id: filler after each completion.
      progress: show a progress bar.

    Yields:
      `CompletionBatch` of at most `batch_size` states.
    """
    states.check_context(policy.config, ds.tokens.shape[1], max_tokens)
    rows, steps = np.nonzero(ds.open_mask())
    n = batch_size
    for start in tqdm(range(0, len(rows), n), desc="completions",
                      disable=not progress):
        rr, tt = rows[start:start + n], steps[start:start + n]
        tokens, lengths = _state_rows(ds.tokens[rr], ds.step_ends[rr, tt],
                                      pad_id)
        keys = derive_keys(seed, COMPLETION_STREAM,
                           pad_batch(ds.problem_index[rr], n),
                           pad_batch(ds.sample_index[rr], n),
                           pad_batch(tt, n))
        out, out_len = jax.device_get(_sample(
            policy, pad_batch(tokens, n), pad_batch(lengths, n), keys,
            stop,
            num_samples=num_completions, max_tokens=max_tokens,
            sampling=sampling, pad_id=pad_id))
        yield CompletionBatch(rollout=rr.astype(np.int32),
                              step=tt.astype(np.int32),
                              tokens=out[:len(rr)], lengths=out_len[:len(rr)])


def completion_text(ds: RolloutDataset, tokenizer, r: int, t: int,
                    completion: np.ndarray, stop: StopRule) -> str:
    """The solution text of s_{t+1} of rollout r continued by `completion`
    (cut after its first step that ends the solution)."""
    cut = _finish_cut(completion, _Masks.of(stop))
    return _decode(tokenizer, np.concatenate([ds.solution_ids(r, t),
                                              completion[:cut]]))


def completion_returns(policy: Decoder, tokenizer, task, ds: RolloutDataset,
                       *, num_completions: int, sampling: SamplingConfig,
                       max_tokens: int, batch_size: int, seed: int,
                       progress: bool = True, stop: StopRule | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Graded outcomes of C completions of every open state s_{t+1}.

    Serves "best of a rollout pool" (the policy itself, sampled) and
    "completion by a stronger policy" (a larger decoder with the same
    tokenizer, greedy, C = 1). Returns are undiscounted 0/1 task.reward of
    the prefix (steps 0..t) followed by the completion, cut after its first
    step that ends the solution.

    Args:
      policy: the decoder that completes; tokenizer: the dataset's.
      task: grades the texts (problems of `ds.split`).
      ds: the rollouts.
      num_completions: C; sampling: how tokens are drawn; max_tokens: T
        tokens per completion; batch_size: states per jitted call; seed:
        root of the keys (see `iter_completions`).
      progress: show a progress bar.
      stop: end / final-answer tokens (default `default_stop_rule`).

    Returns:
      returns [R, S, C] float32 and valid [R, S, C] bool: False past
      num_steps and at the terminal step of a finished rollout (the label
      functions use the rollout's own outcome there).
    """
    stop = default_stop_rule(tokenizer, task) if stop is None else stop
    r, s = ds.step_ends.shape
    returns = np.zeros((r, s, num_completions), np.float32)
    valid = np.zeros((r, s, num_completions), bool)
    problems = task.problems(ds.split)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    for batch in iter_completions(
            policy, ds, stop, num_completions=num_completions,
            sampling=sampling, max_tokens=max_tokens, batch_size=batch_size,
            seed=seed, pad_id=pad_id, progress=progress):
        for i, (rr, tt) in enumerate(zip(batch.rollout, batch.step)):
            problem = problems[int(ds.problem_index[rr])]
            for c in range(num_completions):
                text = completion_text(
                    ds, tokenizer, rr, tt,
                    batch.tokens[i, c, :batch.lengths[i, c]], stop)
                returns[rr, tt, c] = task.reward(problem, text)
            valid[rr, tt] = True
    return returns, valid


def stronger_solver_reward(task, problem, prefix: str) -> float:
    """task.reward of the solution text `prefix` continued by
    `task.continue_written` (ArithChain's gold solver that trusts the written
    values); graded as written when the solver has nothing to add (an answer
    line is already there, or the last step is not one computation)."""
    rest = task.continue_written(problem, prefix)
    if rest:
        delim = task.step_delimiter
        sep = "" if prefix.endswith(delim) else delim
        prefix = prefix + sep + delim.join(rest)
    return task.reward(problem, prefix)


def stronger_solver_returns(task, tokenizer, ds: RolloutDataset
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of the gold solver that trusts the written values.

    Every open state s_{t+1} is continued by `task.continue_written` (for
    ArithChain) and graded by task.reward (`stronger_solver_reward`); a
    state it cannot continue (the last step is not one computation) has no
    answer line and gets 0. Runs on the host.

    Args:
      task: a task with `continue_written` (ArithChain).
      tokenizer: the dataset's tokenizer.
      ds: the rollouts.

    Returns:
      returns [R, S] float32 and valid [R, S] bool (`ds.open_mask()`).
    """
    problems = task.problems(ds.split)
    valid = ds.open_mask()
    returns = np.zeros(valid.shape, np.float32)
    for rr, tt in zip(*np.nonzero(valid)):
        returns[rr, tt] = stronger_solver_reward(
            task, problems[int(ds.problem_index[rr])],
            _decode(tokenizer, ds.solution_ids(rr, tt)))
    return returns, valid
