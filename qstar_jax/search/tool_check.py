"""Tool-checked steps: a host function verifies each new step during search.

A search calls the checker through `jax.pure_callback` on the step tokens
of the nodes it creates, so it stays one jitted loop while the check (the
safe calculator's claim check, for example) runs on the host. The checker
reads only the model-written step: it never sees a gold answer or a task's
solver.

Example:
  >>> check = calculator_step_check(tokenizer)
  >>> ok = checked_steps(check, step_tokens, step_lengths)   # [B, K] bool
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

StepCheck = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""tool_check(tokens [M, T] int32, lengths [M] int32) -> ok [M] bool (host).

True where the step's claims check out (a step without claims is ok)."""


def checked_steps(check: StepCheck, tokens: jax.Array,
                  lengths: jax.Array) -> jax.Array:
    """Runs a host `StepCheck` on steps of any batch shape, inside jit.

    Args:
      check: the host checker.
      tokens: [..., T] int32 step tokens (padding after `lengths`).
      lengths: [...] int32 step lengths.

    Returns:
      [...] bool, True where the step passes.
    """
    shape = lengths.shape
    flat_tokens = tokens.reshape(-1, tokens.shape[-1])
    flat_lengths = lengths.reshape(-1)

    def host(tokens, lengths):
        ok = np.asarray(check(np.asarray(tokens), np.asarray(lengths)), bool)
        if ok.shape != lengths.shape:
            raise ValueError(f"tool_check returned shape {ok.shape}, "
                             f"expected {lengths.shape}")
        return ok

    ok = jax.pure_callback(
        host, jax.ShapeDtypeStruct(flat_lengths.shape, jnp.bool_),
        flat_tokens, flat_lengths, vmap_method="sequential")
    return ok.reshape(shape)


def calculator_step_check(tokenizer) -> StepCheck:
    """A `StepCheck` that decodes each step and runs the safe calculator's
    claim check (`tasks.claims.check_step`) on its text.

    Args:
      tokenizer: anything with `decode(ids) -> str`.
    """
    from qstar_jax.tasks.claims import check_step

    def check(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.asarray([
            check_step(tokenizer.decode(row[:n].tolist())).ok
            for row, n in zip(tokens, lengths)], bool)

    return check
