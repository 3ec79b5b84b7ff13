"""Decoder configuration and numerics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.models.config import backend_dtype, preset, smollm2_135m, tiny
from qstar_jax.models.decoder import apply_rotary, init_decoder, rotary_tables
from qstar_jax.sampling.decode import forward_logits, prefill


def _count(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("config", [
    tiny(), tiny(vocab_size=97, tie_embeddings=False, qkv_bias=True)])
def test_parameter_count_matches_the_modules(config):
    assert _count(init_decoder(config)) == config.num_parameters()
    assert 1_000_000 <= tiny().num_parameters() <= 5_000_000


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        tiny(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="must be positive"):
        tiny(num_layers=0)
    with pytest.raises(ValueError, match="even"):
        tiny(head_dim=33)
    with pytest.raises(TypeError):
        tiny(dtype="float77")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gpt5")
    assert preset("smollm2-135m") == smollm2_135m()


def test_backend_dtype():
    assert backend_dtype("cpu") == "float32"
    assert backend_dtype("gpu") == backend_dtype("tpu") == "bfloat16"


def test_rotary_is_a_rotation_that_depends_on_relative_position():
    x = jax.random.normal(jax.random.key(0), (1, 2, 1, 8))
    cos, sin = rotary_tables(jnp.asarray([[3, 10]]), 8, 10_000.0)
    y = apply_rotary(x, cos, sin)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1),
                               jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    # <R(a) q, R(b) k> depends on a - b only.
    q, k = x[0, 0, 0], x[0, 1, 0]
    def dot(a, b):
        c, s = rotary_tables(jnp.asarray([[a, b]]), 8, 10_000.0)
        r = apply_rotary(jnp.stack([q, k])[None, :, None], c, s)[0, :, 0]
        return float(r[0] @ r[1])
    np.testing.assert_allclose(dot(5, 2), dot(13, 10), rtol=1e-4)


def test_padding_never_changes_real_positions():
    model = init_decoder(tiny(vocab_size=40, num_layers=2), seed=1)
    row = jnp.asarray([[7, 8, 9, 10, 11]], jnp.int32)
    padded = jnp.concatenate([row, jnp.full((1, 4), 33, jnp.int32)], 1)
    a = forward_logits(model, row, jnp.asarray([5]))
    b = forward_logits(model, padded, jnp.asarray([5]))
    np.testing.assert_allclose(a[0], b[0, :5], rtol=1e-5, atol=1e-5)
    _, last = prefill(model, padded, jnp.asarray([5]))
    np.testing.assert_allclose(last[0], a[0, 4], rtol=1e-5, atol=1e-5)


def test_bfloat16_activations_stay_close_to_float32():
    config = tiny(vocab_size=40, num_layers=2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 40, (2, 9)),
                         jnp.int32)
    lengths = jnp.asarray([9, 5])
    f32 = forward_logits(init_decoder(config, 0), tokens, lengths)
    bf16_model = init_decoder(dataclasses.replace(config, dtype="bfloat16"),
                              0)
    bf16 = forward_logits(bf16_model, tokens, lengths)
    assert bf16.dtype == jnp.float32
    assert float(jnp.abs(f32 - bf16)[0].max()) < 0.05
