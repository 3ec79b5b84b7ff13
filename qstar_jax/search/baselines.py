"""Baselines of the papers' comparison tables, batched over problems.

* Greedy decoding: one greedy rollout per problem.
* Best-of-N: N sampled solutions per problem, reranked by a critic: the PRM
  with an aggregation of its step scores (min / max / sum / last), the QVM at
  the solution's last action, or the ORM on the whole solution.
* Self-consistency: majority vote over the N solutions' final answers.

Solutions come from `rollout` (one prefill per problem, N continuations from
the shared cache); each critic scores all N solutions of all problems in one
pass. Answer extraction for voting reads text, so `majority_vote` runs on the
host.
"""

from __future__ import annotations

import collections
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import Continuations, StopRule
from qstar_jax.sampling.logits import GREEDY, SamplingConfig
from qstar_jax.sampling.proposer import rollout
from qstar_jax.sampling.states import append_tokens

AGGREGATIONS = ("min", "max", "sum", "last")


class Solutions(NamedTuple):
    """N sampled solutions per problem, as full sequences.

    Attributes:
      tokens: [B, N, P + T] prompt followed by the solution, right-padded.
      lengths: [B, N] real tokens.
      prompt_lengths: [B] tokens of each prompt.
      continuations: the raw `Continuations` ([B, N, T]).
      step_end: [B, N, P + T] True at the last token of every step of the
        solution (a delimiter, an end token, or the solution's last token).
    """

    tokens: jax.Array
    lengths: jax.Array
    prompt_lengths: jax.Array
    continuations: Continuations
    step_end: jax.Array


def sample_solutions(policy: Decoder, tokens: jax.Array, lengths: jax.Array,
                     keys: jax.Array, stop: StopRule, *, num_samples: int,
                     max_tokens: int,
                     sampling: SamplingConfig = GREEDY) -> Solutions:
    """Samples N complete solutions per problem.

    Args:
      policy: the policy decoder.
      tokens: [B, P] prompts; lengths: [B]; keys: [B] one key per problem.
      stop: delimiter tokens mark step ends; end tokens end a solution.
      num_samples: N; max_tokens: T tokens per solution.
      sampling: the sampling rule (greedy for the greedy baseline).
    """
    conts = rollout(policy, tokens, lengths, keys, stop,
                    max_tokens=max_tokens, num_samples=num_samples,
                    sampling=sampling)
    b, n, t = conts.tokens.shape
    full, full_lengths = append_tokens(
        jnp.broadcast_to(tokens[:, None], (b, n, tokens.shape[1])),
        jnp.broadcast_to(lengths[:, None], (b, n)), conts.tokens,
        conts.lengths)
    pos = jnp.arange(full.shape[-1])
    in_solution = ((pos >= lengths[:, None, None])
                   & (pos < full_lengths[..., None]))
    marks = stop.delimiter[full] | stop.end[full]
    last = pos == full_lengths[..., None] - 1
    return Solutions(tokens=full, lengths=full_lengths,
                     prompt_lengths=lengths, continuations=conts,
                     step_end=in_solution & (marks | last))


def aggregate(scores: jax.Array, mask: jax.Array, how: str) -> jax.Array:
    """Aggregates per-position scores over masked positions.

    Args:
      scores: [..., L] scores; mask: [..., L] positions that count (at least
        one per row).
      how: 'min', 'max', 'sum' or 'last' (the last masked position).

    Returns:
      [...] aggregated scores.
    """
    if how == "min":
        return jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1)
    if how == "max":
        return jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1)
    if how == "sum":
        return jnp.sum(jnp.where(mask, scores, 0.0), axis=-1)
    if how == "last":
        idx = scores.shape[-1] - 1 - jnp.argmax(mask[..., ::-1], axis=-1)
        return jnp.take_along_axis(scores, idx[..., None], -1)[..., 0]
    raise ValueError(f"unknown aggregation {how!r}; use one of "
                     f"{AGGREGATIONS}")


def _per_token_scores(critic: Critic, solutions: Solutions) -> jax.Array:
    b, n, l = solutions.tokens.shape
    scores = critic(solutions.tokens.reshape(b * n, l),
                    solutions.lengths.reshape(b * n))
    return scores.reshape(b, n, l)


def solution_scores(critic: Critic, solutions: Solutions, *, kind: str,
                    aggregation: str = "min") -> jax.Array:
    """Scores [B, N] of every solution by one critic.

    Args:
      critic: the PRM, QVM or ORM.
      solutions: from `sample_solutions`.
      kind: 'prm' (aggregate the step scores), 'qvm' (Q of the last action:
        the score at the last token) or 'orm' (the score at the last token).
      aggregation: for 'prm': 'min', 'max', 'sum' or 'last'.
    """
    scores = _per_token_scores(critic, solutions)
    if kind == "prm":
        return aggregate(scores, solutions.step_end, aggregation)
    if kind in ("qvm", "orm"):
        last = (solutions.lengths - 1)[..., None]
        return jnp.take_along_axis(scores, last, axis=-1)[..., 0]
    raise ValueError(f"unknown critic kind {kind!r}; use 'prm', 'qvm' or "
                     "'orm'")


def best_of_n(policy: Decoder, critic: Critic, tokens: jax.Array,
              lengths: jax.Array, keys: jax.Array, stop: StopRule, *,
              num_samples: int, max_tokens: int, sampling: SamplingConfig,
              kind: str, aggregation: str = "min"
              ) -> tuple[Solutions, jax.Array, jax.Array]:
    """Best-of-N reranking.

    Returns:
      (solutions, scores [B, N], best [B]): the index of the highest-scoring
      solution of each problem (ties to the lower index).
    """
    solutions = sample_solutions(policy, tokens, lengths, keys, stop,
                                 num_samples=num_samples,
                                 max_tokens=max_tokens, sampling=sampling)
    scores = solution_scores(critic, solutions, kind=kind,
                             aggregation=aggregation)
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    return solutions, scores, jnp.argmax(scores, axis=-1)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-missing answer; ties go to the one seen first.

    Args:
      answers: the N extracted (normalised) answers of one problem.
    """
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)
