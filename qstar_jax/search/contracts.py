"""Trace-time checks of what searches are given and what plug-ins return.

A search calls user functions (`ExpandFn`, `LookaheadFn`, `ProposeFn`,
`EvaluateFn`) inside a jitted loop, where a wrong shape would otherwise be
broadcast silently (a 1-row output for a 2-row batch) or fail deep inside
XLA. These checks run once, while the function is traced, and raise a
ValueError that names the function, the field, the expected and the actual
shape or dtype. Nothing here runs on device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DTYPE_WORDS = {"int": "an integer", "float": "a float",
                "mask": "a bool (or integer)"}


def function_name(fn) -> str:
    """A readable name for a plug-in function (partials unwrapped)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or getattr(
        fn, "__name__", None) or type(fn).__name__


def check_array(fn_name: str, kind: str, field: str, x, shape: tuple,
                names: str, dtype_kind: str) -> None:
    """Raises a ValueError unless x has `shape` and a dtype of the kind.

    Args:
      fn_name: who returned x (for the message), e.g. "expand_fn `expand`".
      kind: the returned type's name (e.g. "Expansion").
      field: the field holding x.
      x: the array (or abstract value).
      shape: the expected shape.
      names: the shape's letters, e.g. "(B, K, T)".
      dtype_kind: 'int', 'float' or 'mask' (bool or integer).
    """
    got = tuple(getattr(x, "shape", ()))
    if got != tuple(shape):
        raise ValueError(
            f"{fn_name} returned {kind}.{field} with shape {got}; expected "
            f"{names} = {tuple(shape)}")
    dtype = x.dtype
    ok = {"int": jnp.issubdtype(dtype, jnp.integer),
          "float": jnp.issubdtype(dtype, jnp.floating),
          "mask": jnp.issubdtype(dtype, jnp.integer) or dtype == bool}
    if not ok[dtype_kind]:
        raise ValueError(
            f"{fn_name} returned {kind}.{field} of dtype {dtype}; expected "
            f"{_DTYPE_WORDS[dtype_kind]} dtype")


def check_keys(fn_name: str, keys, batch: int, field: str = "keys") -> None:
    """Raises a ValueError unless `keys` holds one PRNG key per row.

    Accepts typed keys of shape [B] (`jax.random.split(key, B)`) or raw
    uint32 keys of shape [B, 2] (or [B, 4]).
    """
    shape = tuple(getattr(keys, "shape", ()))
    dtype = getattr(keys, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    if typed and shape == (batch,):
        return
    if not typed and dtype == jnp.uint32 and len(shape) == 2 and \
            shape[0] == batch:
        return
    raise ValueError(
        f"{fn_name}: {field} has shape {shape} and dtype {dtype}; expected "
        f"one PRNG key per problem, (B,) = ({batch},) typed keys such as "
        f"jax.random.split(key, {batch})")


def check_rows(fn_name: str, field: str, x, batch: int) -> None:
    """Raises a ValueError unless x is a [B] integer array."""
    shape = tuple(getattr(x, "shape", ()))
    if shape != (batch,):
        raise ValueError(f"{fn_name}: {field} has shape {shape}; expected "
                         f"(B,) = ({batch},), one entry per problem")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{fn_name}: {field} has dtype {x.dtype}; expected "
                         "an integer dtype")


def check_prompts(fn_name: str, prompt_tokens, prompt_lengths, keys,
                  state_width: int | None = None) -> int:
    """Checks a search's batch inputs; returns B.

    Args:
      fn_name: the search, for the message.
      prompt_tokens: [B, P0] integer prompts.
      prompt_lengths: [B] integer lengths.
      keys: [B] PRNG keys.
      state_width: P; prompts wider than P would be cut (an error).
    """
    shape = tuple(getattr(prompt_tokens, "shape", ()))
    if len(shape) != 2 or not jnp.issubdtype(prompt_tokens.dtype,
                                              jnp.integer):
        raise ValueError(f"{fn_name}: prompt_tokens has shape {shape} and "
                         f"dtype {getattr(prompt_tokens, 'dtype', None)}; "
                         "expected (B, P0) integer token ids")
    batch = shape[0]
    check_rows(fn_name, "prompt_lengths", prompt_lengths, batch)
    check_keys(fn_name, keys, batch)
    if state_width is not None and shape[1] > state_width:
        raise ValueError(
            f"{fn_name}: prompts have {shape[1]} token slots but "
            f"config.state_width is {state_width}; a prompt is never cut, "
            "so raise state_width (or pad prompts to at most it)")
    return batch
