"""Prefill, forked decoding and teacher-forced scoring with fixed shapes.

`prefill` runs B right-padded states through the decoder once and returns their
`PrefixCache` plus the logits of each state's next token. `sample_continuations`
then forks M continuations per state from that cache and decodes them together
in one `lax.while_loop`: every iteration is one decoder call on B*M tokens,
rows that stopped are masked, and the loop ends when all rows stopped or the
T slots are used. Nothing here is jitted on its own; callers jit the
composition (see `qstar_jax.sampling.proposer`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.models.attention import (PrefixCache, SuffixCache,
                                        causal_attend, forked_attend)
from qstar_jax.models.decoder import Decoder, LayerKV
from qstar_jax.sampling.logits import (SamplingConfig, row_uniforms,
                                       sample_tokens, token_log_probs)


class StopRule(NamedTuple):
    """Which generated tokens end a continuation (boolean masks over V).

    Attributes:
      delimiter: [V] tokens that end a reasoning step (kept in the step).
      end: [V] tokens that end the whole solution, such as EOS (kept).
      final: [V] tokens that mark a step as the final-answer step without
        ending it by themselves (for example the token of '####').
    """

    delimiter: jax.Array
    end: jax.Array
    final: jax.Array

    def without_delimiters(self) -> "StopRule":
        """The same rule for rollouts: only end tokens stop."""
        return self._replace(delimiter=jnp.zeros_like(self.delimiter))


class Continuations(NamedTuple):
    """M sampled continuations for each of B states.

    Attributes:
      tokens: [B, M, T] int32, `pad_id` after each row's length.
      lengths: [B, M] int32 tokens generated, stop token included.
      log_probs: [B, M] float32 sum of the model's token log-probabilities
        (temperature 1, unfiltered), whatever rule drew the tokens.
      ended_by_end: [B, M] an end token (EOS) was generated.
      ended_by_delimiter: [B, M] a delimiter token was generated.
      truncated: [B, M] all T slots used without a stop token.
      contains_final: [B, M] a `final` token occurs in the continuation.
      decode_steps: scalar int32 decoder calls made by the loop.
    """

    tokens: jax.Array
    lengths: jax.Array
    log_probs: jax.Array
    ended_by_end: jax.Array
    ended_by_delimiter: jax.Array
    truncated: jax.Array
    contains_final: jax.Array
    decode_steps: jax.Array


def prefill(model: Decoder, tokens: jax.Array,
            lengths: jax.Array) -> tuple[PrefixCache, jax.Array]:
    """Encodes B right-padded states once.

    Args:
      model: the decoder.
      tokens: [B, P] int32, real tokens first, any valid id as padding.
      lengths: [B] int32 real tokens per state, in [1, P].

    Returns:
      cache: the states' `PrefixCache`.
      next_logits: [B, V] float32 logits for each state's next token.
    """
    b, p = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    hidden, kvs = model(tokens, positions, causal_attend(lengths))
    last = hidden[jnp.arange(b), lengths - 1]
    return PrefixCache.from_layer_kvs(kvs, lengths), model.logits(last)


class _LoopState(NamedTuple):
    step: jax.Array        # [] slot of `token`
    token: jax.Array       # [B, M] token written at slot `step`
    tokens: jax.Array      # [B, M, T]
    lengths: jax.Array     # [B, M]
    log_probs: jax.Array   # [B, M]
    done: jax.Array        # [B, M]
    ended_end: jax.Array   # [B, M]
    ended_delim: jax.Array  # [B, M]
    final: jax.Array       # [B, M]
    suffix: SuffixCache
    pending: tuple          # per layer LayerKV [B*M, 1, KV, hd] of slot step-1
    decode_steps: jax.Array  # []


def _record(state: _LoopState, step, token, logits, stop: StopRule,
            pad_id: int) -> _LoopState:
    """Writes the token drawn for slot `step` into the active rows."""
    active = ~state.done
    written = jnp.where(active, token, pad_id)
    tokens = jax.lax.dynamic_update_slice(
        state.tokens, written[:, :, None], (0, 0, step))
    is_end = active & stop.end[token]
    is_delim = active & stop.delimiter[token] & ~is_end
    return state._replace(
        step=step, token=token, tokens=tokens,
        lengths=state.lengths + active,
        log_probs=state.log_probs
        + jnp.where(active, token_log_probs(logits, token), 0.0),
        done=state.done | is_end | is_delim,
        ended_end=state.ended_end | is_end,
        ended_delim=state.ended_delim | is_delim,
        final=state.final | (active & stop.final[token]))


def sample_continuations(model: Decoder, prefix: PrefixCache,
                         next_logits: jax.Array, keys: jax.Array, *,
                         num_samples: int, max_tokens: int, stop: StopRule,
                         sampling: SamplingConfig,
                         pad_id: int = 0, attend_fn=None,
                         start_positions: jax.Array | None = None
                         ) -> Continuations:
    """Forks M continuations per state and decodes them to a stop token.

    Args:
      model: the decoder.
      prefix: the states' cache from `prefill`.
      next_logits: [B, V] logits from `prefill`.
      keys: [B] typed PRNG keys, one per state; the continuations of a state
        depend only on its key, not on the rest of the batch.
      num_samples: M continuations per state.
      max_tokens: T slots per continuation.
      stop: which tokens end a continuation.
      sampling: how tokens are drawn.
      pad_id: filler after each continuation's end.
      attend_fn: attend_fn(suffix, step) -> the `AttendFn` of a decode
        step (default `forked_attend(prefix, suffix, step)`); a tree state
        passes `tree_attention.tree_decode_attend` over prompt + path.
      start_positions: [B] int32 position of each state's first new token
        (default `prefix.lengths`).

    Returns:
      The `Continuations`.
    """
    if attend_fn is None:
        attend_fn = functools.partial(forked_attend, prefix)
    if start_positions is None:
        start_positions = prefix.lengths
    b, vocab = next_logits.shape
    m, t = num_samples, max_tokens
    zeros_bm = jnp.zeros((b, m), bool)
    state = _LoopState(
        step=jnp.int32(0), token=jnp.zeros((b, m), jnp.int32),
        tokens=jnp.full((b, m, t), pad_id, jnp.int32),
        lengths=jnp.zeros((b, m), jnp.int32),
        log_probs=jnp.zeros((b, m), jnp.float32), done=zeros_bm,
        ended_end=zeros_bm, ended_delim=zeros_bm, final=zeros_bm,
        suffix=SuffixCache.zeros(prefix, m, t),
        pending=tuple(LayerKV(k=jnp.zeros((b * m, 1) + kp.shape[1:2]
                                          + kp.shape[3:], kp.dtype),
                              v=jnp.zeros((b * m, 1) + kp.shape[1:2]
                                          + kp.shape[3:], kp.dtype))
                      for kp in prefix.k),
        decode_steps=jnp.int32(0))
    logits = jnp.broadcast_to(next_logits[:, None, :], (b, m, vocab))
    first = sample_tokens(logits, row_uniforms(keys, m, jnp.int32(0)),
                          sampling)
    state = _record(state, jnp.int32(0), first, logits, stop, pad_id)

    def cond(s: _LoopState):
        return (s.step + 1 < t) & ~jnp.all(s.done)

    def body(s: _LoopState):
        # The previous token's keys/values are stored before the cache is
        # read (at step 0 a zero placeholder goes to the masked slot 0):
        # written after the read, XLA copies the whole cache every step. The
        # barrier makes the written cache one buffer that the attention and
        # the loop carry share; without it XLA fuses the update twice (once
        # into each consumer) and copies every layer's cache 4 times a step
        # (SmolLM2 at B = 64: 240 copies of 11 MB per step, 362 -> 6 copies).
        suffix = jax.lax.optimization_barrier(
            s.suffix.write(s.pending, jnp.maximum(s.step - 1, 0)))
        positions = jnp.broadcast_to(start_positions[:, None] + s.step,
                                     (b, m)).reshape(b * m, 1)
        hidden, kvs = model(s.token.reshape(b * m, 1), positions,
                            attend_fn(suffix, s.step))
        s = s._replace(suffix=suffix, pending=tuple(kvs),
                       decode_steps=s.decode_steps + 1)
        logits = model.logits(hidden[:, 0]).reshape(b, m, vocab)
        step = s.step + 1
        token = sample_tokens(logits, row_uniforms(keys, m, step), sampling)
        return _record(s, step, token, logits, stop, pad_id)

    state = jax.lax.while_loop(cond, body, state)
    return Continuations(
        tokens=state.tokens, lengths=state.lengths,
        log_probs=state.log_probs, ended_by_end=state.ended_end,
        ended_by_delimiter=state.ended_delim,
        truncated=~(state.ended_end | state.ended_delim),
        contains_final=state.final, decode_steps=state.decode_steps)


def forward_logits(model: Decoder, tokens: jax.Array,
                   lengths: jax.Array) -> jax.Array:
    """Logits at every position of right-padded sequences (teacher forcing).

    Args:
      model: the decoder.
      tokens: [N, L] int32.
      lengths: [N] real tokens per row (padding is never attended to).

    Returns:
      [N, L, V] float32; rows past a sequence's length are meaningless.
    """
    n, l = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (n, l))
    hidden, _ = model(tokens, positions, causal_attend(lengths))
    return model.logits(hidden)


def sequence_log_probs(model: Decoder, tokens: jax.Array,
                       lengths: jax.Array) -> jax.Array:
    """Teacher-forced log-probabilities of every next token.

    Args:
      model: the decoder.
      tokens: [N, L] int32 right-padded sequences.
      lengths: [N] real tokens per row.

    Returns:
      [N, L-1] float32: entry i is log p(tokens[:, i+1] | tokens[:, :i+1]);
      zero where i+1 >= length.
    """
    logits = forward_logits(model, tokens, lengths)
    logp = token_log_probs(logits[:, :-1], tokens[:, 1:])
    valid = jnp.arange(1, tokens.shape[1])[None, :] < lengths[:, None]
    return jnp.where(valid, logp, 0.0)
