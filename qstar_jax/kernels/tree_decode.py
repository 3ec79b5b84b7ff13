"""Pallas kernel: decode attention over a tree state's three cached parts.

One new token per continuation (b, m) attends to its row's prompt keys
[0, prompt_len[b]), its row's path keys [0, path_len[b]) (the steps along
the node's path, gathered from the per-node pool) and its own suffix slots
[0, suffix_len[b, m]). The kernel computes each part's masked softmax
statistics and merges them by log-sum-exp (Hydragen-style), returning the
normalised output and the log-sum-exp, so the caller can merge one more
part (the new token itself) exactly. One grid step serves one (b, m, kv
head) and all G query heads of that kv head; prompt and path blocks are
indexed by b alone, so all M continuations read the same prompt and path
memory and nothing is copied per continuation.

`tree_decode_reference` is the pure-jnp computation it must match (tested
in interpret mode on CPU on random and ragged shapes).
`tree_decode_attention` runs the kernel: compiled on GPU and TPU, or with
`interpret=True` anywhere (slow: for tests). On GPU (Triton) every block
extent must be a power of two, so the wrapper pads G, P0, W, T, hd and the
length vectors there (padded keys are masked by the lengths, padded query
heads and widths are cut from the result). Checked here in interpret mode
only: no GPU or TPU was at hand to compile it on.

Shapes: B rows, M continuations, KV key/value heads, G query heads per kv
head, hd head width, P0 prompt slots, W path slots, T suffix slots.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

_NEG_INF = -1e30


def _part_stats(q, k, v, length, scale):
    """(peak [G, 1], denom [G, 1], out [G, hd]) of q [G, hd] over k, v
    [S, hd] with keys [0, length) visible, float32."""
    s = jnp.sum(q[:, None, :] * k[None, :, :], axis=-1) * scale   # [G, S]
    mask = jax.lax.broadcasted_iota(jnp.int32, s.shape, 1) < length
    s = jnp.where(mask, s, _NEG_INF)
    peak = jnp.max(s, axis=-1, keepdims=True)
    w = jnp.where(mask, jnp.exp(s - peak), 0.0)
    denom = jnp.sum(w, axis=-1, keepdims=True)
    out = jnp.sum(w[:, :, None] * v[None, :, :], axis=1)
    return peak, denom, out


def _merge(stats):
    peak = stats[0][0]
    for p, _, _ in stats[1:]:
        peak = jnp.maximum(peak, p)
    denom = sum(d * jnp.exp(p - peak) for p, d, _ in stats)
    out = sum(o * jnp.exp(p - peak) for p, _, o in stats)
    return out / denom, (peak + jnp.log(denom))[:, 0]


def _kernel(plen_ref, wlen_ref, slen_ref, q_ref, kp_ref, vp_ref, kw_ref,
            vw_ref, ks_ref, vs_ref, out_ref, lse_ref, *, scale):
    b, m = pl.program_id(0), pl.program_id(1)
    f32 = jnp.float32
    q = q_ref[...].astype(f32)                                    # [G, hd]
    stats = [
        _part_stats(q, kp_ref[...].astype(f32), vp_ref[...].astype(f32),
                    plen_ref[b], scale),
        _part_stats(q, kw_ref[...].astype(f32), vw_ref[...].astype(f32),
                    wlen_ref[b], scale),
        _part_stats(q, ks_ref[...].astype(f32), vs_ref[...].astype(f32),
                    slen_ref[b, m], scale)]
    out, lse = _merge(stats)
    out_ref[...] = out.astype(out_ref.dtype)
    lse_ref[...] = lse


def _pad_axis(x, axis, size):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad) if size != x.shape[axis] else x


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def tree_decode_attention(q, prompt_k, prompt_v, prompt_len, path_k, path_v,
                          path_len, suffix_k, suffix_v, suffix_len, *,
                          interpret: bool | None = None,
                          pad_pow2: bool | None = None):
    """Decode attention over prompt + path + suffix, as a Pallas kernel.

    Args:
      q: [B, M, KV, G, hd] queries of the new tokens.
      prompt_k, prompt_v: [B, KV, P0, hd]; prompt_len: [B] int32.
      path_k, path_v: [B, KV, W, hd]; path_len: [B] int32.
      suffix_k, suffix_v: [B, M, KV, T, hd]; suffix_len: [B, M] int32.
      interpret: run the kernel in the Pallas interpreter (default: on
        backends other than GPU and TPU).
      pad_pow2: pad every block extent to a power of two (default: when
        compiled for GPU, where Triton needs it; tests set it in
        interpret mode).

    Returns:
      out [B, M, KV, G, hd] in q's dtype (normalised over the visible
      keys of the three parts) and lse [B, M, KV, G] float32 (their
      log-sum-exp; -1e30-ish when no key is visible).
    """
    backend = jax.default_backend()
    if interpret is None:
        interpret = backend not in ("gpu", "tpu")
    b, m, kv, g, hd = q.shape
    lengths = (prompt_len.astype(jnp.int32), path_len.astype(jnp.int32),
               suffix_len.astype(jnp.int32))
    if pad_pow2 is None:
        pad_pow2 = backend == "gpu" and not interpret
    if pad_pow2:
        # The length vectors are read whole by every grid step: their
        # extents too must be powers of two (rows past B are never read).
        lengths = (_pad_axis(lengths[0], 0, _pow2(b)),
                   _pad_axis(lengths[1], 0, _pow2(b)),
                   _pad_axis(_pad_axis(lengths[2], 0, _pow2(b)), 1,
                             _pow2(m)))
        sizes = dict(g=_pow2(g), p=_pow2(prompt_k.shape[2]),
                     w=_pow2(path_k.shape[2]), t=_pow2(suffix_k.shape[3]),
                     d=_pow2(hd))
        q = _pad_axis(_pad_axis(q, 3, sizes["g"]), 4, sizes["d"])
        prompt_k, prompt_v = (_pad_axis(_pad_axis(x, 2, sizes["p"]), 3,
                                        sizes["d"])
                              for x in (prompt_k, prompt_v))
        path_k, path_v = (_pad_axis(_pad_axis(x, 2, sizes["w"]), 3,
                                    sizes["d"]) for x in (path_k, path_v))
        suffix_k, suffix_v = (_pad_axis(_pad_axis(x, 3, sizes["t"]), 4,
                                        sizes["d"])
                              for x in (suffix_k, suffix_v))
    gp, hdp = q.shape[3], q.shape[4]
    p0, w, t = prompt_k.shape[2], path_k.shape[2], suffix_k.shape[3]
    full = lambda shape: pl.BlockSpec(shape, lambda *_: (0,) * len(shape))
    out, lse = pl.pallas_call(
        functools.partial(_kernel, scale=1.0 / float(hd) ** 0.5),
        grid=(b, m, kv),
        in_specs=[
            full(lengths[0].shape), full(lengths[1].shape),
            full(lengths[2].shape),
            pl.BlockSpec((None, None, None, gp, hdp),
                         lambda i, j, k: (i, j, k, 0, 0)),
            pl.BlockSpec((None, None, p0, hdp), lambda i, j, k: (i, k, 0, 0)),
            pl.BlockSpec((None, None, p0, hdp), lambda i, j, k: (i, k, 0, 0)),
            pl.BlockSpec((None, None, w, hdp), lambda i, j, k: (i, k, 0, 0)),
            pl.BlockSpec((None, None, w, hdp), lambda i, j, k: (i, k, 0, 0)),
            pl.BlockSpec((None, None, None, t, hdp),
                         lambda i, j, k: (i, j, k, 0, 0)),
            pl.BlockSpec((None, None, None, t, hdp),
                         lambda i, j, k: (i, j, k, 0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, gp, hdp),
                         lambda i, j, k: (i, j, k, 0, 0)),
            pl.BlockSpec((None, None, None, gp), lambda i, j, k: (i, j, k, 0)),
        ],
        out_shape=[jax.ShapeDtypeStruct((b, m, kv, gp, hdp), q.dtype),
                   jax.ShapeDtypeStruct((b, m, kv, gp), jnp.float32)],
        interpret=interpret,
    )(*lengths, q, prompt_k, prompt_v, path_k, path_v, suffix_k,
      suffix_v)
    return out[..., :g, :hd], lse[..., :g]


def tree_decode_reference(q, prompt_k, prompt_v, prompt_len, path_k, path_v,
                          path_len, suffix_k, suffix_v, suffix_len):
    """The pure-jnp computation `tree_decode_attention` must match (same
    arguments and results): one softmax over the concatenated visible keys
    of the three parts, without any splitting."""
    f32 = jnp.float32
    b, m, kv, g, hd = q.shape
    keys = jnp.concatenate([
        jnp.broadcast_to(prompt_k[:, None], (b, m) + prompt_k.shape[1:]),
        jnp.broadcast_to(path_k[:, None], (b, m) + path_k.shape[1:]),
        suffix_k], axis=3).astype(f32)
    values = jnp.concatenate([
        jnp.broadcast_to(prompt_v[:, None], (b, m) + prompt_v.shape[1:]),
        jnp.broadcast_to(path_v[:, None], (b, m) + path_v.shape[1:]),
        suffix_v], axis=3).astype(f32)
    p0, w, t = prompt_k.shape[2], path_k.shape[2], suffix_k.shape[3]
    visible = jnp.concatenate([
        jnp.broadcast_to(jnp.arange(p0) < prompt_len[:, None, None],
                         (b, m, p0)),
        jnp.broadcast_to(jnp.arange(w) < path_len[:, None, None], (b, m, w)),
        jnp.arange(t) < suffix_len[..., None]], axis=-1)         # [B, M, S]
    s = jnp.einsum("bmkgd,bmksd->bmkgs", q.astype(f32), keys) / jnp.sqrt(
        f32(hd))
    s = jnp.where(visible[:, :, None, None], s, _NEG_INF)
    lse = jax.nn.logsumexp(s, axis=-1)
    probs = jnp.exp(s - lse[..., None]) * visible[:, :, None, None]
    out = jnp.einsum("bmkgs,bmksd->bmkgd", probs, values)
    return out.astype(q.dtype), lse
