"""The Pallas tree-decode kernel (interpret mode on CPU) against its
pure-jnp reference, on random and ragged shapes, and inside the decoder's
attention (`tree_decode_attend(kernel=...)`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.kernels.tree_decode import (tree_decode_attention,
                                           tree_decode_reference)
from qstar_jax.models.attention import PrefixCache, SuffixCache
from qstar_jax.models.tree_attention import PathKV, tree_decode_attend


def _inputs(rng, b, m, kv, g, hd, p0, w, t, ragged=True):
    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    if ragged:
        prompt_len = rng.integers(1, p0 + 1, b)
        path_len = rng.integers(0, w + 1, b)
        suffix_len = rng.integers(0, t + 1, (b, m))
    else:
        prompt_len = np.full(b, p0)
        path_len = np.full(b, w)
        suffix_len = np.full((b, m), t)
    return (normal(b, m, kv, g, hd), normal(b, kv, p0, hd),
            normal(b, kv, p0, hd), jnp.asarray(prompt_len, jnp.int32),
            normal(b, kv, w, hd), normal(b, kv, w, hd),
            jnp.asarray(path_len, jnp.int32), normal(b, m, kv, t, hd),
            normal(b, m, kv, t, hd), jnp.asarray(suffix_len, jnp.int32))


SHAPES = [  # b, m, kv, g, hd, p0, w, t
    (1, 1, 1, 1, 4, 1, 1, 1),
    (2, 3, 2, 3, 8, 5, 7, 4),
    (3, 2, 1, 4, 16, 9, 0 + 3, 6),
    (2, 4, 2, 2, 32, 16, 16, 8),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ragged", [True, False])
def test_kernel_matches_reference(shape, ragged):
    rng = np.random.default_rng(sum(shape) + ragged)
    args = _inputs(rng, *shape, ragged=ragged)
    out, lse = tree_decode_attention(*args, interpret=True)
    want_out, want_lse = tree_decode_reference(*args)
    assert out.shape == want_out.shape and lse.shape == want_lse.shape
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, want_lse, atol=1e-5, rtol=1e-5)


def test_kernel_padded_to_powers_of_two_matches_reference():
    """The GPU layout (every extent padded to a power of two, as Triton
    needs) on ragged odd shapes, run in the interpreter."""
    rng = np.random.default_rng(11)
    args = _inputs(rng, 3, 3, 2, 3, 12, 5, 7, 6)
    out, lse = tree_decode_attention(*args, interpret=True, pad_pow2=True)
    want_out, want_lse = tree_decode_reference(*args)
    assert out.shape == want_out.shape and lse.shape == want_lse.shape
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, want_lse, atol=1e-5, rtol=1e-5)


def test_kernel_with_empty_path_and_suffix_is_prompt_attention():
    rng = np.random.default_rng(7)
    args = list(_inputs(rng, 2, 2, 1, 2, 8, 4, 3, 2))
    args[6] = jnp.zeros(2, jnp.int32)                 # No path.
    args[9] = jnp.zeros((2, 2), jnp.int32)             # No suffix.
    out, _ = tree_decode_attention(*args, interpret=True)
    q, kp, vp, plen = args[0], args[1], args[2], np.asarray(args[3])
    for b in range(2):
        s = np.einsum("mkgd,kpd->mkgp", q[b], kp[b, :, :plen[b]]) / np.sqrt(8)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        want = np.einsum("mkgp,kpd->mkgd", p, vp[b, :, :plen[b]])
        np.testing.assert_allclose(out[b], want, atol=1e-5, rtol=1e-5)


def test_tree_decode_attend_with_kernel_equals_pure_jnp():
    rng = np.random.default_rng(3)
    b, m, kv, g, hd, p0, w, t, layers = 2, 3, 2, 3, 8, 5, 6, 4, 2
    args = _inputs(rng, b, m, kv, g, hd, p0, w, t)
    prompt = PrefixCache(k=(args[1],) * layers, v=(args[2],) * layers,
                         lengths=args[3])
    path = PathKV(k=(args[4],) * layers, v=(args[5],) * layers,
                  lengths=args[6])
    suffix = SuffixCache(k=(args[7],) * layers, v=(args[8],) * layers)
    q = jnp.asarray(rng.normal(size=(b * m, 1, kv * g, hd)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b * m, 1, kv, hd)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b * m, 1, kv, hd)), jnp.float32)

    def kernel(*xs):
        return tree_decode_attention(*xs, interpret=True)

    step = jnp.int32(2)
    got = tree_decode_attend(prompt, path, suffix, step, kernel=kernel)(
        1, q, k, v)
    want = tree_decode_attend(prompt, path, suffix, step)(1, q, k, v)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
