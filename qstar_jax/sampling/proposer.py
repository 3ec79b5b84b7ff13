"""The policy's interface to search: K distinct next reasoning steps per state.

For B states, `propose_steps` prefills each state once, forks M >= K sampled
continuations from that shared prefix cache, stops each at a step delimiter,
an end token or the step-token limit, removes duplicates and keeps the K most
likely distinct steps. `greedy_step` and `rollout` are the same machinery with
M = 1 (greedy) and with delimiters switched off (continue to the end).

Example:
  >>> config = ProposerConfig(num_steps=4, num_samples=8, max_step_tokens=32)
  >>> keys = jax.random.split(jax.random.key(0), tokens.shape[0])
  >>> steps = jax.jit(propose_steps, static_argnames="config")(
  ...     model, tokens, lengths, keys, stop, config=config)
  >>> steps.tokens.shape  # [B, 4, 32]
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import (Continuations, StopRule, prefill,
                                       sample_continuations)
from qstar_jax.sampling.logits import GREEDY, SamplingConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposerConfig:
    """Static settings of the step proposer.

    Attributes:
      num_steps: K distinct steps returned per state.
      num_samples: M >= K continuations sampled per state.
      max_step_tokens: T, the longest step in tokens.
      sampling: how tokens are drawn (temperature, top-k, top-p).
      pad_id: filler after each step's end.
    """

    num_steps: int = 6
    num_samples: int = 12
    max_step_tokens: int = 48
    sampling: SamplingConfig = SamplingConfig(temperature=0.9)
    pad_id: int = 0

    def __post_init__(self):
        if self.num_steps < 1 or self.max_step_tokens < 1:
            raise ValueError("num_steps and max_step_tokens must be >= 1")
        if self.num_samples < self.num_steps:
            raise ValueError(
                f"num_samples ({self.num_samples}) must be >= num_steps "
                f"({self.num_steps})")


class StepProposals(NamedTuple):
    """K candidate next steps for each of B states, most likely first.

    Attributes:
      tokens: [B, K, T] int32 step tokens, `pad_id` after the length.
      lengths: [B, K] int32 tokens in the step (stop token included).
      log_probs: [B, K] float32 sum of the step's token log-probabilities.
      finished: [B, K] the step ends the solution (an end token, or a
        `final` token such as the answer marker).
      truncated: [B, K] the step hit T tokens without a stop token.
      valid: [B, K] fewer than K distinct steps were found where False.
      generated_tokens: [B] int32 tokens sampled for the state, duplicates
        and discarded samples included (the compute actually spent).
    """

    tokens: jax.Array
    lengths: jax.Array
    log_probs: jax.Array
    finished: jax.Array
    truncated: jax.Array
    valid: jax.Array
    generated_tokens: jax.Array


def _duplicate_of_earlier(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, M] True where sample m equals some sample m' < m of its state."""
    same_tokens = jnp.all(tokens[:, :, None, :] == tokens[:, None, :, :], -1)
    same = same_tokens & (lengths[:, :, None] == lengths[:, None, :])
    m = tokens.shape[1]
    earlier = jnp.arange(m)[None, :] < jnp.arange(m)[:, None]  # [m, m']
    return jnp.any(same & earlier[None], axis=-1)


def select_distinct(conts: Continuations, num_steps: int) -> StepProposals:
    """Keeps the K most likely distinct continuations of each state.

    Identical token sequences count once (the first sample is kept). Ties in
    log-probability go to the lower sample index.

    Args:
      conts: M continuations per state ([B, M, ...]).
      num_steps: K <= M.

    Returns:
      `StepProposals` with K entries per state, sorted by log-probability.
    """
    dup = _duplicate_of_earlier(conts.tokens, conts.lengths)
    score = jnp.where(dup, -jnp.inf, conts.log_probs)
    _, idx = jax.lax.top_k(score, num_steps)  # [B, K]

    def take(x):
        return jnp.take_along_axis(
            x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    valid = take(~dup)
    return StepProposals(
        tokens=take(conts.tokens), lengths=take(conts.lengths),
        log_probs=jnp.where(valid, take(conts.log_probs), -jnp.inf),
        finished=take(conts.ended_by_end | conts.contains_final) & valid,
        truncated=take(conts.truncated) & valid, valid=valid,
        generated_tokens=conts.lengths.sum(axis=1))


def propose_steps(model: Decoder, tokens: jax.Array, lengths: jax.Array,
                  keys: jax.Array, stop: StopRule, *,
                  config: ProposerConfig) -> StepProposals:
    """K distinct next steps for each of B states.

    Args:
      model: the policy decoder.
      tokens: [B, P] int32 right-padded states (prompt plus steps so far).
      lengths: [B] int32 real tokens per state, in [1, P].
      keys: [B] typed PRNG keys, one per state.
      stop: delimiter / end / final token masks.
      config: static proposer settings.

    Returns:
      `StepProposals` ([B, K, T] tokens).
    """
    cache, next_logits = prefill(model, tokens, lengths)
    conts = sample_continuations(
        model, cache, next_logits, keys, num_samples=config.num_samples,
        max_tokens=config.max_step_tokens, stop=stop,
        sampling=config.sampling, pad_id=config.pad_id)
    return select_distinct(conts, config.num_steps)


def greedy_step(model: Decoder, tokens: jax.Array, lengths: jax.Array,
                stop: StopRule, *, max_step_tokens: int,
                pad_id: int = 0) -> StepProposals:
    """The single most likely next step of each state, decoded greedily.

    Returns `StepProposals` with K = 1.
    """
    config = ProposerConfig(num_steps=1, num_samples=1,
                            max_step_tokens=max_step_tokens, sampling=GREEDY,
                            pad_id=pad_id)
    keys = jax.random.split(jax.random.key(0), tokens.shape[0])  # Unused.
    return propose_steps(model, tokens, lengths, keys, stop, config=config)


def rollout(model: Decoder, tokens: jax.Array, lengths: jax.Array,
            keys: jax.Array, stop: StopRule, *, max_tokens: int,
            num_samples: int = 1, sampling: SamplingConfig = GREEDY,
            pad_id: int = 0) -> Continuations:
    """Continues each state to the end of the solution (or `max_tokens`).

    Delimiters do not stop a rollout; end tokens do. Returns
    `Continuations` with [B, num_samples, max_tokens] tokens.
    """
    cache, next_logits = prefill(model, tokens, lengths)
    return sample_continuations(
        model, cache, next_logits, keys, num_samples=num_samples,
        max_tokens=max_tokens, stop=stop.without_delimiters(),
        sampling=sampling, pad_id=pad_id)
