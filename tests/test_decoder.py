"""Decoder configuration and numerics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.models.config import backend_dtype, preset, smollm2_135m, tiny
from qstar_jax.models.decoder import apply_rotary, init_decoder, rotary_tables
from qstar_jax.sampling.decode import (StopRule, forward_logits, prefill,
                                       sample_continuations)
from qstar_jax.sampling.logits import SamplingConfig


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


def _no_stop(vocab):
    none = jnp.zeros(vocab, bool)
    return StopRule(none, none, none)


def _teacher_forced_log_prob(model, prefix, continuation):
    """log p(continuation | prefix) from one forward pass over the unpadded
    sequence (no cache, no padding anywhere)."""
    seq = jnp.asarray([prefix + continuation], jnp.int32)
    logits = jax.jit(forward_logits)(model, seq, jnp.asarray([seq.shape[1]]))
    logp = np.asarray(jax.nn.log_softmax(logits[0]))
    return sum(float(logp[len(prefix) - 1 + i, t])
               for i, t in enumerate(continuation))


_ROWS = [[7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19, 20, 21]]


@pytest.fixture(scope="module")
def unpadded_decoding():
    """(model, decode, keys, continuations of each row prefilled alone
    without padding, their teacher-forced log-probabilities [row][m])."""
    model = init_decoder(tiny(vocab_size=40, num_layers=2), seed=1)
    keys = jax.random.split(jax.random.key(4), len(_ROWS))
    sampling, stop = SamplingConfig(temperature=1.0), _no_stop(40)

    @jax.jit
    def decode(tokens, lengths, keys):
        cache, next_logits = prefill(model, tokens, lengths)
        return sample_continuations(model, cache, next_logits, keys,
                                    num_samples=2, max_tokens=6, stop=stop,
                                    sampling=sampling)

    alone = [decode(jnp.asarray([r]), jnp.asarray([len(r)]), keys[i:i + 1])
             for i, r in enumerate(_ROWS)]
    want = [[_teacher_forced_log_prob(model, row, np.asarray(
        alone[i].tokens[0, m]).tolist()) for m in range(2)]
        for i, row in enumerate(_ROWS)]
    return model, decode, keys, alone, want


@pytest.mark.parametrize("pad,width", [(0, 16), (33, 7)])
def test_decoding_after_a_padded_prefill_ignores_the_padding(
        unpadded_decoding, pad, width):
    """Continuations decoded from the cache of a right-padded batch equal
    those of each state prefilled alone without padding, and their
    log-probabilities equal teacher forcing over the unpadded sequence.
    Causal attention hides right padding from the prefill's real
    positions, but not from decoding, which reads the whole cache."""
    model, decode, keys, alone, want = unpadded_decoding
    tokens = jnp.asarray([r + [pad] * (width - len(r)) for r in _ROWS])
    padded = decode(tokens, jnp.asarray([len(r) for r in _ROWS]), keys)
    for i in range(len(_ROWS)):
        np.testing.assert_array_equal(padded.tokens[i], alone[i].tokens[0])
        np.testing.assert_allclose(np.asarray(padded.log_probs[i]), want[i],
                                   rtol=1e-4, atol=1e-4, err_msg=f"row {i}")


def test_bfloat16_activations_stay_close_to_float32():
    """Every row's real positions, at a bound near the measured error
    (at most 0.0067 on these inputs: the logits are bfloat16-rounded)."""
    config = tiny(vocab_size=40, num_layers=2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 40, (4, 9)),
                         jnp.int32)
    lengths = [9, 5, 7, 2]
    f32 = forward_logits(init_decoder(config, 0), tokens,
                         jnp.asarray(lengths))
    bf16_model = init_decoder(dataclasses.replace(config, dtype="bfloat16"),
                              0)
    bf16 = forward_logits(bf16_model, tokens, jnp.asarray(lengths))
    assert bf16.dtype == jnp.float32
    for i, length in enumerate(lengths):
        err = float(jnp.abs(f32 - bf16)[i, :length].max())
        assert err < 0.009, (i, err)
