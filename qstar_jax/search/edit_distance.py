"""Levenshtein distance between token sequences, batched on device.

The dynamic programme D[i][j] (distance between the first i tokens of a and
the first j of b) runs one row i at a time over all pairs at once. Within a
row, D[i][j] = min(D[i-1][j] + 1, D[i-1][j-1] + [a_i != b_j], D[i][j-1] + 1)
has a left-to-right dependency; with tmp[j] the first two terms,
D[i][j] = min_k<=j (tmp[k] + j - k) = j + cummin_k(tmp[k] - k), so each row
is one vectorised cumulative minimum. T rows of O(T) work per pair.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def edit_distance(a: jax.Array, a_lengths: jax.Array, b: jax.Array,
                  b_lengths: jax.Array) -> jax.Array:
    """Token edit distances (insert, delete, substitute: cost 1 each).

    Args:
      a: [..., T] int32 sequences, right-padded (padding is ignored).
      a_lengths: [...] int32 real tokens of each, in [0, T].
      b: [..., T] int32 the other sequences (same T; broadcastable with a).
      b_lengths: [...] int32, in [0, T].

    Returns:
      [...] int32 distances (the broadcast shape of the inputs' batch
      dimensions).
    """
    shape = jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1],
                                 a_lengths.shape, b_lengths.shape)
    t = a.shape[-1]
    if b.shape[-1] != t:
        raise ValueError(f"edit_distance: a has {t} token slots, b has "
                         f"{b.shape[-1]}")
    a = jnp.broadcast_to(a, shape + (t,)).reshape(-1, t)
    b = jnp.broadcast_to(b, shape + (t,)).reshape(-1, t)
    la = jnp.broadcast_to(a_lengths, shape).reshape(-1)
    lb = jnp.broadcast_to(b_lengths, shape).reshape(-1)
    cols = jnp.arange(t + 1, dtype=jnp.int32)               # j = 0..T
    first = jnp.broadcast_to(cols, (a.shape[0], t + 1))    # D[0][j] = j
    found = jnp.where(la == 0, lb, 0).astype(jnp.int32)

    def row(i, carry):
        prev, found = carry                                 # D[i-1], [M]
        token = jax.lax.dynamic_index_in_dim(a, i - 1, axis=1,
                                             keepdims=True)  # [M, 1]
        cost = (token != b).astype(jnp.int32)               # [M, T]
        diag = prev[:, :-1] + cost                          # j = 1..T
        tmp = jnp.concatenate(
            [jnp.full((a.shape[0], 1), i, jnp.int32),
             jnp.minimum(prev[:, 1:] + 1, diag)], axis=1)   # [M, T + 1]
        cur = cols + jax.lax.cummin(tmp - cols, axis=1)
        here = jnp.take_along_axis(cur, lb[:, None], axis=1)[:, 0]
        return cur, jnp.where(la == i, here, found)

    _, found = jax.lax.fori_loop(1, t + 1, row, (first, found))
    return found.reshape(shape)
