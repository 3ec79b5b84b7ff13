"""Whole-solution methods for `solve`: greedy, best-of-N, majority vote.

Each problem's N solutions are sampled in one jitted call for the batch
(`baselines.sample_solutions`: one prefill per prompt, N continuations from
the shared cache, until an end token or `max_tokens`). A sample is cut after
its first step holding a final-answer token (as search would stop there);
it is finished when that step, or the whole sample, ended with a stop token
(`solution_end`). Best-of-N scores every sample with one critic and takes
the best finished one; majority vote takes the most frequent answer among
the finished samples (`task.extract_answer`), ties to the first seen.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import numpy as np

from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.logits import GREEDY, SamplingConfig
from qstar_jax.search.baselines import (AGGREGATIONS, majority_vote,
                                        sample_solutions, solution_scores)
from qstar_jax.solver.records import Outcome, decode

CRITICS = ("prm", "qvm", "orm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GreedyConfig:
    """Greedy decoding of the whole solution.

    Attributes:
      max_tokens: T, the longest solution in tokens.
      prompt_width: P0, prompt slots per row (a longer prompt is an error).
    """

    max_tokens: int = 128
    prompt_width: int = 128

    def __post_init__(self):
        _check_sizes(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BestOfNConfig:
    """N sampled solutions reranked by one critic.

    Attributes:
      num_samples: N solutions per problem.
      max_tokens: T, the longest solution in tokens.
      prompt_width: P0, prompt slots per row.
      sampling: how solution tokens are drawn.
      critic: the reranker, 'prm' (its step scores aggregated), 'qvm' (Q of
        the last step) or 'orm' (the score of the whole solution); the
        models must hold it.
      aggregation: for 'prm': 'min', 'max', 'sum' or 'last'.
    """

    num_samples: int = 8
    max_tokens: int = 128
    prompt_width: int = 128
    sampling: SamplingConfig = SamplingConfig(temperature=0.9)
    critic: str = "prm"
    aggregation: str = "min"

    def __post_init__(self):
        _check_sizes(self)
        if self.critic not in CRITICS:
            raise ValueError(f"BestOfNConfig.critic={self.critic!r}; use "
                             f"one of {CRITICS}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"BestOfNConfig.aggregation="
                             f"{self.aggregation!r}; use one of "
                             f"{AGGREGATIONS}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MajorityVoteConfig:
    """Self-consistency: the most frequent answer of N sampled solutions.

    Attributes:
      num_samples: N solutions per problem.
      max_tokens: T, the longest solution in tokens.
      prompt_width: P0, prompt slots per row.
      sampling: how solution tokens are drawn.
    """

    num_samples: int = 8
    max_tokens: int = 128
    prompt_width: int = 128
    sampling: SamplingConfig = SamplingConfig(temperature=0.9)

    def __post_init__(self):
        _check_sizes(self)


def _check_sizes(config) -> None:
    for name in ("num_samples", "max_tokens", "prompt_width"):
        value = getattr(config, name, 1)
        if value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be >= 1, "
                             f"got {value}")


def solution_end(ids: np.ndarray, stop: StopRule) -> tuple[int, bool]:
    """Where a sampled solution ends and whether it is finished (host).

    The solution is cut after the first step that holds an end or final
    token: at that token if it is an end token, else at the next delimiter
    or end token. It is finished when such a step was found and closed;
    a sample cut at the token limit inside its answer step, or with no end
    at all, is not.

    Args:
      ids: [L] the sample's token ids.
      stop: the stop rule ([V] masks).

    Returns:
      (length kept, finished).
    """
    delim, end, final = (np.asarray(x) for x in stop)
    ids = np.asarray(ids, np.int64)
    hits = np.flatnonzero(end[ids] | final[ids])
    if hits.size == 0:
        return len(ids), False
    first = int(hits[0])
    closing = np.flatnonzero((delim | end)[ids[first:]])
    if closing.size == 0:
        return len(ids), False
    return first + int(closing[0]) + 1, True


@functools.partial(jax.jit, static_argnames=("num_samples", "max_tokens",
                                             "sampling", "kind",
                                             "aggregation"))
def _sample(policy, critic, tokens, lengths, keys, stop, *, num_samples,
            max_tokens, sampling, kind=None, aggregation="min"):
    """([B, N, T] tokens, [B, N] lengths, [B, N] scores or None)."""
    solutions = sample_solutions(policy, tokens, lengths, keys, stop,
                                 num_samples=num_samples,
                                 max_tokens=max_tokens, sampling=sampling)
    scores = None if critic is None else solution_scores(
        critic, solutions, kind=kind, aggregation=aggregation)
    return (solutions.continuations.tokens,
            solutions.continuations.lengths, scores)


def _samples(models, tokens, lengths, keys, stop, config, critic=None,
             kind=None, aggregation="min"):
    """Host samples: per row, N (ids, finished) pairs, tokens spent and
    scores [B, N] (or None)."""
    num = getattr(config, "num_samples", 1)
    sampling = getattr(config, "sampling", GREEDY)
    out, out_len, scores = jax.device_get(_sample(
        models.policy, critic, tokens, lengths, keys, stop,
        num_samples=num, max_tokens=config.max_tokens, sampling=sampling,
        kind=kind, aggregation=aggregation))
    rows = []
    for b in range(out.shape[0]):
        row = []
        for j in range(num):
            ids = out[b, j, :out_len[b, j]]
            keep, finished = solution_end(ids, stop)
            row.append((ids[:keep].tolist(), finished))
        rows.append(row)
    return rows, out_len.sum(axis=1), scores


def run_greedy(models, task, tokens, lengths, keys, stop,
               config: GreedyConfig) -> list[Outcome]:
    """`solve`'s batch runner of greedy decoding."""
    del task
    rows, spent, _ = _samples(models, tokens, lengths, keys, stop, config)
    return [Outcome(tokens=row[0][0], finished=row[0][1],
                    generated_tokens=int(spent[b]), model_calls=1,
                    details={}) for b, row in enumerate(rows)]


def run_best_of_n(models, task, tokens, lengths, keys, stop,
                  config: BestOfNConfig) -> list[Outcome]:
    """`solve`'s batch runner of best-of-N (see the module docstring)."""
    del task
    critic = getattr(models, config.critic)
    rows, spent, scores = _samples(
        models, tokens, lengths, keys, stop, config, critic=critic,
        kind=config.critic, aggregation=config.aggregation)
    outcomes = []
    for b, row in enumerate(rows):
        done = np.asarray([finished for _, finished in row])
        score = np.where(np.isnan(scores[b]), -np.inf, scores[b])
        pick = int(np.argmax(np.where(done, score, -np.inf))
                   if done.any() else np.argmax(score))
        outcomes.append(Outcome(
            tokens=row[pick][0], finished=row[pick][1],
            generated_tokens=int(spent[b]), model_calls=2,
            details={"score": float(scores[b, pick]), "sample": pick,
                     "finished_samples": int(done.sum())}))
    return outcomes


def run_majority_vote(models, task, tokens, lengths, keys, stop,
                      config: MajorityVoteConfig) -> list[Outcome]:
    """`solve`'s batch runner of majority vote (see the module
    docstring)."""
    rows, spent, _ = _samples(models, tokens, lengths, keys, stop, config)
    outcomes = []
    for b, row in enumerate(rows):
        answers = [task.extract_answer(decode(models.tokenizer, ids))
                   if finished else None for ids, finished in row]
        winner = majority_vote(answers)
        votes = collections.Counter(a for a in answers if a is not None)
        finished = [j for j, (_, done) in enumerate(row) if done]
        if winner is not None:
            pick = answers.index(winner)
        else:
            pick = finished[0] if finished else 0
        outcomes.append(Outcome(
            tokens=row[pick][0], finished=row[pick][1],
            generated_tokens=int(spent[b]), model_calls=1,
            details={"votes": votes[winner] if winner is not None else 0,
                     "answers": len(votes), "answer_votes": dict(votes),
                     "finished_samples": len(finished)}))
    return outcomes
