"""Host-side preparation of decoder inputs: padded state arrays, stop rules.

These run once per call on the host (Python lists in, fixed-shape arrays
out) and reject what the jitted code cannot represent: an empty state, a state
longer than the prefix cache, or a cache longer than the model's context.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import jax.numpy as jnp
import numpy as np

from qstar_jax.models.config import DecoderConfig
from qstar_jax.sampling.decode import StopRule


class CacheOverflowError(ValueError):
    """A prompt or state does not fit the cache it is meant for."""


class _Vocabulary(Protocol):
    vocab_size: int
    eos_id: int | None

    def token_texts(self) -> list[str]: ...


def pad_states(states: Sequence[Sequence[int]], width: int,
               pad_id: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Right-pads token lists into a fixed [B, width] array.

    Args:
      states: B token-id lists (prompt plus steps so far), each non-empty.
      width: P, the prefix-cache length.
      pad_id: filler id (never attended to).

    Returns:
      tokens [B, P] int32 and lengths [B] int32.

    Raises:
      CacheOverflowError: a state longer than P.
      ValueError: no states, or an empty state.
    """
    if not states:
        raise ValueError("no states given")
    tokens = np.full((len(states), width), pad_id, np.int32)
    for i, state in enumerate(states):
        if len(state) == 0:
            raise ValueError(f"state {i} is empty; a state needs at least "
                             "one token (for example the prompt)")
        if len(state) > width:
            raise CacheOverflowError(
                f"state {i} has {len(state)} tokens but the prefix cache "
                f"holds {width}; raise the cache length or shorten the prompt")
        tokens[i, :len(state)] = state
    return jnp.asarray(tokens), jnp.asarray([len(s) for s in states],
                                            jnp.int32)


def append_tokens(tokens: jnp.ndarray, lengths: jnp.ndarray,
                  extra: jnp.ndarray, extra_lengths: jnp.ndarray,
                  pad_id: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Concatenates right-padded sequences on device with fixed shapes.

    Args:
      tokens: [..., P] states.
      lengths: [...] real tokens per state.
      extra: [..., T] continuations (steps) to append.
      extra_lengths: [...] real tokens per continuation.
      pad_id: filler after the new length.

    Returns:
      tokens [..., P + T] and lengths [...] (= lengths + extra_lengths).
    """
    p, t = tokens.shape[-1], extra.shape[-1]
    pos = jnp.arange(p + t)
    offset = pos - lengths[..., None]                     # [..., P + T]
    from_extra = jnp.take_along_axis(
        extra, jnp.clip(offset, 0, t - 1), axis=-1)
    from_state = jnp.concatenate(
        [tokens, jnp.full(tokens.shape[:-1] + (t,), pad_id, tokens.dtype)],
        axis=-1)
    total = lengths + extra_lengths
    out = jnp.where(offset < 0, from_state,
                    jnp.where(pos < total[..., None], from_extra, pad_id))
    return out.astype(tokens.dtype), total


def check_context(config: DecoderConfig, prefix_tokens: int,
                  new_tokens: int) -> None:
    """Raises CacheOverflowError when prefix + new tokens exceed the context."""
    total = prefix_tokens + new_tokens
    if total > config.max_seq_len:
        raise CacheOverflowError(
            f"a cache of {prefix_tokens} prefix + {new_tokens} new tokens = "
            f"{total} exceeds the model's context of {config.max_seq_len}")


def stop_rule(vocab: _Vocabulary, *, delimiter: str | None = "\n",
              end_ids: Sequence[int] | None = None,
              final_marker: str | None = None) -> StopRule:
    """Builds a `StopRule` from a tokenizer's vocabulary.

    Args:
      vocab: a tokenizer (`vocab_size`, `eos_id`, `token_texts()`).
      delimiter: a step ends at any token whose text contains it (None: no
        delimiter, for rollouts).
      end_ids: tokens that end the solution (default: the tokenizer's EOS).
      final_marker: a step containing a token whose text contains it is the
        final-answer step (for example '#'), or None.

    Returns:
      The `StopRule` ([V] boolean masks).

    Raises:
      ValueError: an end id outside the vocabulary, or a delimiter or final
        marker that no token's text contains (the rule would silently never
        fire: a marker spread over several tokens cannot be matched).
    """
    texts = vocab.token_texts()
    size = vocab.vocab_size

    def mask(predicate):
        out = np.zeros(size, bool)
        for i, text in enumerate(texts[:size]):
            out[i] = predicate(text)
        return out

    end = np.zeros(size, bool)
    ids = list(end_ids) if end_ids is not None else [vocab.eos_id]
    for i in ids:
        if i is None or not 0 <= i < size:
            raise ValueError(f"end token id {i} is not in the vocabulary")
        end[i] = True
    delim = mask(lambda t: delimiter in t) if delimiter else np.zeros(size,
                                                                      bool)
    final = mask(lambda t: final_marker in t) if final_marker else \
        np.zeros(size, bool)
    for name, text, hits in (("delimiter", delimiter, delim),
                             ("final_marker", final_marker, final)):
        if text and not hits.any():
            raise ValueError(
                f"stop_rule: {name}={text!r} is in no token of the "
                f"{size}-token vocabulary, so it would never match; a "
                "marker must lie within one token's text")
    return StopRule(delimiter=jnp.asarray(delim & ~end),
                    end=jnp.asarray(end), final=jnp.asarray(final))


def encode_task_prompts(tokenizer, task, problems: Sequence, width: int, *,
                        add_bos: bool | None = None,
                        pad_id: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompt ids of `task.format_prompt(problem)` (host).

    Args:
      tokenizer: `encode(text[, add_bos=...])`, `pad_id`.
      task: the task (plain or chat prompts come from `format_prompt`).
      problems: B problems (`uid` names a prompt that does not fit).
      width: P0, prompt slots per row.
      add_bos: prepend the BOS token (None: the tokenizer's default).
      pad_id: filler (default the tokenizer's `pad_id`, else 0).

    Returns:
      tokens [B, P0] int32 and lengths [B] int32 (numpy).

    Raises:
      CacheOverflowError: a prompt longer than `width` (it is never cut).
      ValueError: an empty prompt.
    """
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_id", None)
    pad_id = 0 if pad_id is None else pad_id
    tokens = np.full((len(problems), width), pad_id, np.int32)
    lengths = np.zeros(len(problems), np.int32)
    for i, problem in enumerate(problems):
        text = task.format_prompt(problem)
        ids = (tokenizer.encode(text) if add_bos is None
               else tokenizer.encode(text, add_bos=add_bos))
        if not ids:
            raise ValueError(f"the prompt of problem {problem.uid!r} has "
                             "no tokens")
        if len(ids) > width:
            raise CacheOverflowError(
                f"the prompt of problem {problem.uid!r} has {len(ids)} "
                f"tokens but the prompt width is {width}; raise the width "
                "(a prompt is never cut)")
        tokens[i, :len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


def task_stop_rule(vocab: _Vocabulary, task, *,
                   end_ids: Sequence[int] | None = None) -> StopRule:
    """The `StopRule` a task implies: its `step_delimiter` ends a step, the
    tokenizer's EOS (or `end_ids`) ends the solution, and tokens holding the
    task's optional `final_marker` (ArithChain and GSM8K: '####'; absent or
    None: no final-answer token) mark the final-answer step.

    Args:
      vocab: the tokenizer.
      task: a `qstar_jax.tasks.base.Task`.
      end_ids: tokens that end the solution (default: the tokenizer's EOS).
    """
    marker = getattr(task, "final_marker", None)
    if marker is not None and not isinstance(marker, str):
        raise ValueError(f"{type(task).__name__}.final_marker must be a str "
                         f"or None, got {marker!r}")
    return stop_rule(vocab, delimiter=task.step_delimiter, end_ids=end_ids,
                     final_marker=marker or None)


def pad_batch(x: np.ndarray, rows: int) -> np.ndarray:
    """Pads axis 0 of a host array to `rows` by repeating row 0, so the last
    batch of a loop keeps the jitted shape (its extra rows are dropped)."""
    if len(x) == rows:
        return x
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), axis=0)])
