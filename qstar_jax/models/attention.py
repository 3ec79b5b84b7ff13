"""Attention over the new tokens and the key/value caches.

Two caches cover every use in the library:

* `PrefixCache`: the keys/values of B states (prompts or partial solutions),
  right-padded to P tokens, one copy per state.
* `SuffixCache`: M continuations forked from each state, T slots each.

A forked continuation attends to its state's prefix cache (read once for all
M samples, never copied M times), to its own suffix slots written so far, and
to itself. Layouts keep the head axis before the time axis
(`[B, KV, P, hd]`, `[B, M, KV, T, hd]`) so that the attention contractions run
on the caches as stored, without transposing them at every step.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from qstar_jax.models.decoder import AttendFn, LayerKV

_NEG_INF = -1e30


class PrefixCache(NamedTuple):
    """Keys/values of B right-padded states.

    Attributes:
      k: per layer [B, KV, P, hd].
      v: per layer [B, KV, P, hd].
      lengths: [B] int32 number of real tokens of each state (1..P).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    lengths: jax.Array

    @classmethod
    def from_layer_kvs(cls, kvs: Sequence[LayerKV],
                       lengths: jax.Array) -> "PrefixCache":
        """Builds the cache from a prefill's [B, P, KV, hd] keys/values."""
        return cls(k=tuple(kv.k.transpose(0, 2, 1, 3) for kv in kvs),
                   v=tuple(kv.v.transpose(0, 2, 1, 3) for kv in kvs),
                   lengths=lengths)


class SuffixCache(NamedTuple):
    """Keys/values of M continuations per state, T slots each.

    Attributes:
      k: per layer [B, M, KV, T, hd].
      v: per layer [B, M, KV, T, hd].
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @classmethod
    def zeros(cls, prefix: PrefixCache, num_samples: int,
              num_slots: int) -> "SuffixCache":
        """An empty suffix cache matching the prefix's layers and dtype."""
        b, kv, _, hd = prefix.k[0].shape
        shape = (b, num_samples, kv, num_slots, hd)
        dtype = prefix.k[0].dtype
        zeros = tuple(jnp.zeros(shape, dtype) for _ in prefix.k)
        return cls(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in prefix.k))

    def write(self, kvs: Sequence[LayerKV], slot: jax.Array) -> "SuffixCache":
        """Stores one new token per continuation at `slot`.

        Args:
          kvs: per layer keys/values [B*M, 1, KV, hd] of the new tokens.
          slot: scalar int32 slot index.
        """
        b, m, kv_heads, _, hd = self.k[0].shape

        def put(cache, new):
            new = new.reshape(b, m, kv_heads, 1, hd)
            return jax.lax.dynamic_update_slice(
                cache, new.astype(cache.dtype), (0, 0, 0, slot, 0))

        return SuffixCache(
            k=tuple(put(c, kv.k) for c, kv in zip(self.k, kvs)),
            v=tuple(put(c, kv.v) for c, kv in zip(self.v, kvs)))


def grouped_scores(q: jax.Array, keys: jax.Array) -> jax.Array:
    """Unscaled scores of grouped queries against one cache per row.

    The contraction runs with (B, KV) as the leading batch axes of both
    operands (the queries are transposed, the cache is read as stored): with
    those axes apart, XLA's CPU backend lowered these small batched products
    to a path that made the prefix attention cost more than the suffix's
    (measured: 30 layers of decoding attention at B = 64, 33.2 -> 15.6 ms).

    Args:
      q: [B, R, KV, G, hd] queries (R: any rows per cache row).
      keys: [B, KV, S, hd].

    Returns:
      [B, R, KV, G, S] float32.
    """
    b, r, kv_heads, g, hd = q.shape
    rows = q.transpose(0, 2, 1, 3, 4).reshape(b, kv_heads, r * g, hd)
    scores = jnp.einsum("bkrd,bksd->bkrs", rows, keys,
                        preferred_element_type=jnp.float32)
    return scores.reshape(b, kv_heads, r, g, -1).transpose(0, 2, 1, 3, 4)


def grouped_values(weights: jax.Array, values: jax.Array) -> jax.Array:
    """Weighted sums of one cache's values per row (see `grouped_scores`).

    Args:
      weights: [B, R, KV, G, S] float32.
      values: [B, KV, S, hd].

    Returns:
      [B, R, KV, G, hd] float32.
    """
    b, r, kv_heads, g, s = weights.shape
    rows = weights.transpose(0, 2, 1, 3, 4).reshape(b, kv_heads, r * g, s)
    out = jnp.einsum("bkrs,bksd->bkrd", rows.astype(values.dtype), values,
                     preferred_element_type=jnp.float32)
    return out.reshape(b, kv_heads, r, g, -1).transpose(0, 2, 1, 3, 4)


def causal_attend(lengths: jax.Array) -> AttendFn:
    """Causal self-attention within right-padded rows (prefill, scoring).

    Args:
      lengths: [N] real tokens per row; keys at positions >= length are
        masked, so padding never leaks into real tokens.

    Returns:
      An `AttendFn` for `Decoder.__call__`.
    """

    def attend(layer: int, q, k, v):
        del layer
        n, l, h, hd = q.shape
        kv_heads = k.shape[2]
        q = q.reshape(n, l, kv_heads, h // kv_heads, hd)
        scores = jnp.einsum("nqkgd,nskd->nkgqs", q, k,
                            preferred_element_type=jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(hd))
        pos = jnp.arange(l)
        mask = ((pos[None, :] <= pos[:, None])[None]
                & (pos[None, None, :] < lengths[:, None, None]))
        scores = jnp.where(mask[:, None, None], scores, _NEG_INF)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("nkgqs,nskd->nqkgd", probs, v)
        return out.reshape(n, l, h, hd)

    return attend


def forked_attend(prefix: PrefixCache, suffix: SuffixCache,
                  step: jax.Array) -> AttendFn:
    """Attention of one new token per continuation (decoding).

    The new token of continuation (b, m) sees prefix tokens [0, lengths[b]),
    its own suffix slots [0, step), and itself.

    Args:
      prefix: the states' cache.
      suffix: the continuations' cache; slots >= step are ignored.
      step: scalar int32, number of suffix slots already written.

    Returns:
      An `AttendFn` taking q [B*M, 1, H, hd], k, v [B*M, 1, KV, hd].
    """
    b, m, kv_heads, t_slots, hd = suffix.k[0].shape
    p_slots = prefix.k[0].shape[2]
    prefix_mask = jnp.arange(p_slots)[None, :] < prefix.lengths[:, None]
    suffix_mask = jnp.arange(t_slots) < step
    scale = 1.0 / jnp.sqrt(jnp.float32(hd))

    def attend(layer: int, q, k, v):
        h = q.shape[2]
        q = q.reshape(b, m, kv_heads, h // kv_heads, hd)
        k = k.reshape(b, m, kv_heads, 1, hd)
        v = v.reshape(b, m, kv_heads, 1, hd)
        kp, vp = prefix.k[layer], prefix.v[layer]
        ks, vs = suffix.k[layer], suffix.v[layer]
        f32 = jnp.float32
        s_pre = grouped_scores(q, kp) * scale
        s_pre = jnp.where(prefix_mask[:, None, None, None], s_pre, _NEG_INF)
        s_suf = jnp.einsum("bmkgd,bmktd->bmkgt", q, ks,
                           preferred_element_type=f32) * scale
        s_suf = jnp.where(suffix_mask, s_suf, _NEG_INF)
        s_self = jnp.einsum("bmkgd,bmktd->bmkgt", q, k,
                            preferred_element_type=f32) * scale
        peak = jnp.maximum(jnp.maximum(s_pre.max(-1, keepdims=True),
                                       s_suf.max(-1, keepdims=True)), s_self)
        e_pre, e_suf = jnp.exp(s_pre - peak), jnp.exp(s_suf - peak)
        e_self = jnp.exp(s_self - peak)
        denom = e_pre.sum(-1, keepdims=True) + e_suf.sum(-1, keepdims=True) \
            + e_self
        dt = vp.dtype
        out = (grouped_values(e_pre, vp)
               + jnp.einsum("bmkgt,bmktd->bmkgd", e_suf.astype(dt), vs,
                            preferred_element_type=f32)
               + jnp.einsum("bmkgt,bmktd->bmkgd", e_self.astype(dt), v,
                            preferred_element_type=f32))
        out = (out / denom).astype(q.dtype)
        return out.reshape(b * m, 1, h, hd)

    return attend


def branch_attend(prefix: PrefixCache, branch_prefix_lengths: jax.Array,
                  num_branches: int) -> AttendFn:
    """Attention of M multi-token branches per state (scoring in one pass).

    Branch (b, m) holds T new tokens that follow its state's first
    `branch_prefix_lengths[b, m]` tokens: token t sees those prefix tokens,
    its own branch tokens [0, t], and nothing else. The prefix cache is read
    once for all M branches, never copied. Padding at the end of a branch
    never reaches its real tokens (the mask is causal). With per-branch
    prefix lengths, one cache of a whole trajectory serves branches after
    each of its steps.

    Args:
      prefix: the states' cache (`lengths` unused; see next argument).
      branch_prefix_lengths: [B, M] int32 prefix tokens each branch follows,
        in [1, P].
      num_branches: M.

    Returns:
      An `AttendFn` taking q [B*M, T, H, hd], k, v [B*M, T, KV, hd].
    """
    b, kv_heads, p_slots, hd = prefix.k[0].shape
    m = num_branches
    prefix_mask = (jnp.arange(p_slots)[None, None, :]
                   < branch_prefix_lengths[..., None])           # [B, M, P]
    scale = 1.0 / jnp.sqrt(jnp.float32(hd))

    def attend(layer: int, q, k, v):
        t, h = q.shape[1], q.shape[2]
        g = h // kv_heads
        q = q.reshape(b, m, t, kv_heads, g, hd)
        k = k.reshape(b, m, t, kv_heads, hd)
        v = v.reshape(b, m, t, kv_heads, hd)
        kp, vp = prefix.k[layer], prefix.v[layer]
        f32 = jnp.float32
        s_pre = jnp.einsum("bmtkgd,bkpd->bmkgtp", q, kp,
                           preferred_element_type=f32) * scale
        s_pre = jnp.where(prefix_mask[:, :, None, None, None], s_pre,
                          _NEG_INF)
        s_own = jnp.einsum("bmtkgd,bmskd->bmkgts", q, k,
                           preferred_element_type=f32) * scale
        causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
        s_own = jnp.where(causal, s_own, _NEG_INF)
        peak = jnp.maximum(s_pre.max(-1, keepdims=True),
                           s_own.max(-1, keepdims=True))
        e_pre, e_own = jnp.exp(s_pre - peak), jnp.exp(s_own - peak)
        denom = e_pre.sum(-1, keepdims=True) + e_own.sum(-1, keepdims=True)
        dt = vp.dtype
        out = (jnp.einsum("bmkgtp,bkpd->bmtkgd", e_pre.astype(dt), vp,
                          preferred_element_type=f32)
               + jnp.einsum("bmkgts,bmskd->bmtkgd", e_own.astype(dt), v,
                            preferred_element_type=f32))
        denom = denom.transpose(0, 1, 4, 2, 3, 5)               # [B,M,T,KV,G,1]
        out = (out / denom).astype(q.dtype)
        return out.reshape(b * m, t, h, hd)

    return attend
