"""Tree attention: [prompt KV] + [path KV gathered by node] + [own tokens].

A search node's state is its prompt followed by the steps along its path.
With a per-node key/value pool (`qstar_jax.models.kv_pool`) the prompt is
encoded once per problem and every step once, when its node is expanded;
new tokens then attend to three cached parts and to themselves:

* the row's prompt (`PrefixCache`, [B, KV, P0, hd], shared by all of its
  continuations and branches, never copied),
* the row's path (`PathKV`, [B, KV, W, hd]: the steps of the node's
  ancestors and its own step, gathered from the pool by node),
* a continuation's own suffix (`SuffixCache`) or a branch's own tokens.

Each part is a softmax over its keys left unnormalised (`AttentionPart`:
peak, denominator, weighted values) and the parts are merged exactly by
log-sum-exp (`merge_parts`), as in Hydragen (arXiv 2402.05099). This is the
pure-jnp reference; `qstar_jax.kernels.tree_decode` is the Pallas kernel
for the decode case.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from qstar_jax.models.attention import (PrefixCache, SuffixCache,
                                       grouped_scores, grouped_values)
from qstar_jax.models.decoder import AttendFn

_NEG_INF = -1e30


class PathKV(NamedTuple):
    """Keys/values of each row's path: the steps after its prompt, gathered
    from the per-node pool into W dense slots (`kv_pool.gather_path`).

    The head axis comes before the slot axis, as in the other caches, so
    that the attention contracts with the path as stored, with (B, KV)
    leading (`grouped_scores`). With the path in [B, W, KV, hd], 4 layers
    of the cached search's decode attention at B = 64, M = 8, W = 121 took
    10.0-10.8 ms per step against 6.9-7.0 (the two timed in one run).

    Attributes:
      k: per layer [B, KV, W, hd].
      v: per layer [B, KV, W, hd].
      lengths: [B] int32 real path tokens of each row (0..W).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    lengths: jax.Array


class AttentionPart(NamedTuple):
    """Softmax attention over one part of the keys, not yet normalised.

    Attributes:
      peak: [..., 1] float32 the largest masked score (-1e30: none).
      denom: [..., 1] float32 sum of exp(score - peak).
      out: [..., hd] float32 sum of exp(score - peak) * value.
    """

    peak: jax.Array
    denom: jax.Array
    out: jax.Array


def attention_part(scores: jax.Array, mask: jax.Array, values_fn
                   ) -> AttentionPart:
    """One part of a split attention (Hydragen-style).

    Args:
      scores: [..., S] float32 scaled scores of the part's S keys.
      mask: broadcastable to scores, True where a key is visible.
      values_fn: maps weights [..., S] (float32) to [..., hd] float32, the
        weighted sum of the part's values.
    """
    scores = jnp.where(mask, scores, _NEG_INF)
    peak = scores.max(-1, keepdims=True)
    weights = jnp.where(mask, jnp.exp(scores - peak), 0.0)
    return AttentionPart(peak=peak, denom=weights.sum(-1, keepdims=True),
                         out=values_fn(weights))


def merge_parts(parts: Sequence[AttentionPart]) -> jax.Array:
    """Exact softmax attention over the union of the parts' keys, [..., hd]
    float32: each part is rescaled to the common peak (log-sum-exp)."""
    peak = parts[0].peak
    for part in parts[1:]:
        peak = jnp.maximum(peak, part.peak)
    denom, out = 0.0, 0.0
    for part in parts:
        scale = jnp.exp(part.peak - peak)
        denom = denom + part.denom * scale
        out = out + part.out * scale
    return out / denom


def _prefix_parts(qg: jax.Array, prompt: PrefixCache, path: PathKV,
                  layer: int, prompt_mask: jax.Array,
                  path_mask: jax.Array) -> list[AttentionPart]:
    """Prompt and path parts for queries qg [B, X, KV, G, hd] (X any)."""
    f32 = jnp.float32
    scale = 1.0 / jnp.sqrt(f32(qg.shape[-1]))
    kp, vp = prompt.k[layer], prompt.v[layer]
    kw, vw = path.k[layer], path.v[layer]
    return [
        attention_part(grouped_scores(qg, kp) * scale, prompt_mask,
                       lambda w: grouped_values(w, vp)),
        attention_part(grouped_scores(qg, kw) * scale, path_mask,
                       lambda w: grouped_values(w, vw))]


def tree_decode_attend(prompt: PrefixCache, path: PathKV,
                       suffix: SuffixCache, step: jax.Array, *,
                       kernel=None) -> AttendFn:
    """Attention of one new token per continuation over a tree state.

    The new token of continuation (b, m) sees its row's prompt tokens
    [0, prompt.lengths[b]), its path tokens [0, path.lengths[b]), its own
    suffix slots [0, step) and itself; the four parts are merged by
    log-sum-exp. Equal (up to float rounding) to `forked_attend` over the
    concatenated prompt + path cache.

    Args:
      prompt: the rows' prompt cache ([B, KV, P0, hd]).
      path: the rows' path ([B, KV, W, hd]).
      suffix: the continuations' cache ([B, M, KV, T, hd]).
      step: scalar int32 suffix slots already written.
      kernel: None (pure jnp) or a function with the signature of
        `kernels.tree_decode.tree_decode_attention` (a Pallas kernel over
        the three cached parts); the new token itself is merged after it.

    Returns:
      An `AttendFn` taking q [B*M, 1, H, hd], k, v [B*M, 1, KV, hd].
    """
    b, m, kv_heads, t_slots, hd = suffix.k[0].shape
    p_slots, w_slots = prompt.k[0].shape[2], path.k[0].shape[2]
    prompt_mask = (jnp.arange(p_slots) < prompt.lengths[:, None])[
        :, None, None, None]
    path_mask = (jnp.arange(w_slots) < path.lengths[:, None])[
        :, None, None, None]
    suffix_mask = jnp.arange(t_slots) < step
    f32 = jnp.float32
    scale = 1.0 / jnp.sqrt(f32(hd))

    def attend(layer: int, q, k, v):
        h = q.shape[2]
        qg = q.reshape(b, m, kv_heads, h // kv_heads, hd)
        k = k.reshape(b, m, kv_heads, 1, hd)
        v = v.reshape(b, m, kv_heads, 1, hd)
        s_self = jnp.einsum("bmkgd,bmktd->bmkgt", qg, k,
                            preferred_element_type=f32) * scale
        own = attention_part(s_self, True, lambda w: jnp.einsum(
            "bmkgt,bmktd->bmkgd", w.astype(v.dtype), v,
            preferred_element_type=f32))
        if kernel is not None:
            out, lse = kernel(
                qg, prompt.k[layer], prompt.v[layer], prompt.lengths,
                path.k[layer], path.v[layer], path.lengths,
                suffix.k[layer], suffix.v[layer],
                jnp.broadcast_to(step, (b, m)).astype(jnp.int32))
            cached = AttentionPart(peak=lse[..., None],
                                   denom=jnp.ones_like(lse[..., None]),
                                   out=out.astype(f32))
            parts = [cached, own]
        else:
            ks, vs = suffix.k[layer], suffix.v[layer]
            s_suf = jnp.einsum("bmkgd,bmktd->bmkgt", qg, ks,
                               preferred_element_type=f32) * scale
            parts = _prefix_parts(qg, prompt, path, layer, prompt_mask,
                                  path_mask) + [
                attention_part(s_suf, suffix_mask, lambda w: jnp.einsum(
                    "bmkgt,bmktd->bmkgd", w.astype(vs.dtype), vs,
                    preferred_element_type=f32)), own]
        out = merge_parts(parts).astype(q.dtype)
        return out.reshape(b * m, 1, h, hd)

    return attend


def tree_branch_attend(prompt: PrefixCache, path: PathKV,
                       num_branches: int) -> AttendFn:
    """Attention of M multi-token branches per row after its tree state.

    Token t of branch (b, m) sees the row's prompt tokens, its path tokens
    and its own branch tokens [0, t]; parts merged by log-sum-exp. Used to
    encode a node's step on top of its parent's path (its keys/values go to
    the pool) and to score K children with a critic.

    Args:
      prompt: the rows' prompt cache ([B, KV, P0, hd]).
      path: the rows' path ([B, KV, W, hd]).
      num_branches: M.

    Returns:
      An `AttendFn` taking q [B*M, T, H, hd], k, v [B*M, T, KV, hd].
    """
    b, kv_heads, p_slots, hd = prompt.k[0].shape
    w_slots, m = path.k[0].shape[2], num_branches
    prompt_mask = (jnp.arange(p_slots) < prompt.lengths[:, None])[
        :, None, None, None]
    path_mask = (jnp.arange(w_slots) < path.lengths[:, None])[
        :, None, None, None]
    f32 = jnp.float32
    scale = 1.0 / jnp.sqrt(f32(hd))

    def attend(layer: int, q, k, v):
        t, h = q.shape[1], q.shape[2]
        g = h // kv_heads
        # Branch tokens as one axis X = M * T for the shared parts.
        qg = q.reshape(b, m * t, kv_heads, g, hd)
        k = k.reshape(b, m, t, kv_heads, hd)
        v = v.reshape(b, m, t, kv_heads, hd)
        s_own = jnp.einsum("bmtkgd,bmskd->bmtkgs",
                           qg.reshape(b, m, t, kv_heads, g, hd), k,
                           preferred_element_type=f32) * scale
        causal = (jnp.arange(t)[None, :] <= jnp.arange(t)[:, None])[
            :, None, None, :]
        own = attention_part(s_own, causal, lambda w: jnp.einsum(
            "bmtkgs,bmskd->bmtkgd", w.astype(v.dtype), v,
            preferred_element_type=f32))
        own = AttentionPart(*(x.reshape(b, m * t, kv_heads, g, -1)
                              for x in own))
        parts = _prefix_parts(qg, prompt, path, layer, prompt_mask,
                              path_mask) + [own]
        out = merge_parts(parts).astype(q.dtype)
        return out.reshape(b * m, t, h, hd)

    return attend
