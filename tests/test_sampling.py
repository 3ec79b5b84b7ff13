"""Sampling rules against plain NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.sampling.logits import (GREEDY, SamplingConfig, filter_logits,
                                       first_argmax, row_uniforms,
                                       sample_tokens, token_log_probs)


def _reference_filter(logits, temperature, top_k, top_p):
    """Which tokens a sampler may return, computed with NumPy sorting.

    Top-p applies to the distribution left after top-k (renormalised), as in
    Hugging Face's chain of logits warpers.
    """
    x = logits / temperature
    keep = np.ones_like(x, bool)
    if top_k:
        kth = np.sort(x)[::-1][top_k - 1]
        keep &= x >= kth
    if top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        p = np.where(keep[order], np.exp(x[order] - x.max()), 0.0)
        p /= p.sum()
        before = np.cumsum(p) - p
        allowed = np.zeros_like(keep)
        allowed[order[before < top_p]] = True
        keep &= allowed
    return keep


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.9),
                                         (0, 0.3), (7, 0.8)])
def test_filter_logits_matches_reference(top_k, top_p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 300)).astype(np.float32) * 2
    config = SamplingConfig(temperature=0.7, top_k=top_k, top_p=top_p)
    out = np.asarray(filter_logits(jnp.asarray(logits), config))
    for row, kept in zip(logits, out):
        expected = _reference_filter(row, 0.7, top_k, top_p)
        np.testing.assert_array_equal(np.isfinite(kept), expected)


def test_inverse_cdf_sampling_matches_numpy():
    """The two-level inverse CDF draws the token NumPy's searchsorted draws."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1000,)).astype(np.float32) * 2
    us = jax.random.uniform(jax.random.key(2), (4000,))
    config = SamplingConfig(temperature=1.0)
    tokens = np.asarray(sample_tokens(
        jnp.broadcast_to(jnp.asarray(logits), (4000, 1000)), us, config))
    p = np.exp(logits.astype(np.float64) - logits.max())
    cdf = np.cumsum(p) / p.sum()
    reference = np.searchsorted(cdf, np.asarray(us, np.float64), side="right")
    # Float32 rounding may move a draw that lands within ~1e-6 of a bucket
    # edge; everything else must agree.
    assert np.mean(tokens == reference) >= 0.999


def test_sampling_frequencies_follow_probabilities():
    logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
    us = jax.random.uniform(jax.random.key(3), (20000,))
    tokens = sample_tokens(jnp.broadcast_to(logits, (20000, 4)), us,
                           SamplingConfig(temperature=1.0))
    freq = np.bincount(np.asarray(tokens), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_never_samples_a_removed_token():
    logits = jnp.asarray([[0.0, 5.0, 4.9, -3.0]] * 500)
    us = jax.random.uniform(jax.random.key(4), (500,))
    tokens = sample_tokens(logits, us, SamplingConfig(top_k=2))
    assert set(np.asarray(tokens).tolist()) <= {1, 2}


def test_greedy_is_argmax():
    logits = jax.random.normal(jax.random.key(5), (3, 4, 50))
    np.testing.assert_array_equal(
        sample_tokens(logits, jnp.zeros((3, 4)), GREEDY),
        jnp.argmax(logits, -1))


def test_first_argmax_matches_argmax_on_ties_nan_and_inf():
    x = np.asarray(jax.random.randint(jax.random.key(9), (6, 40), 0, 4),
                   np.float32)                        # many ties
    x[1, :] = -np.inf
    x[2, [5, 17]] = np.nan
    x[3, 0] = np.inf
    x[3, 9] = np.inf
    x[4, 30] = np.nan
    x[4, 2] = np.inf
    np.testing.assert_array_equal(first_argmax(jnp.asarray(x)),
                                  np.argmax(x, axis=-1))
    np.testing.assert_array_equal(first_argmax(jnp.asarray(x)),
                                  jnp.argmax(jnp.asarray(x), axis=-1))


def test_row_uniforms_depend_only_on_own_key():
    keys = jax.random.split(jax.random.key(6), 5)
    full = row_uniforms(keys, 3, jnp.int32(7))
    alone = row_uniforms(keys[2:3], 3, jnp.int32(7))
    np.testing.assert_array_equal(full[2], alone[0])
    assert len(np.unique(np.asarray(full))) == 15


def test_token_log_probs():
    logits = jnp.asarray([[1.0, 2.0, 3.0]])
    expected = np.log(np.exp(2.0) / np.exp([1.0, 2.0, 3.0]).sum())
    np.testing.assert_allclose(token_log_probs(logits, jnp.asarray([1])),
                               [expected], rtol=1e-6)


def test_token_log_probs_matches_log_softmax_and_its_gradient():
    logits = 30.0 * jax.random.normal(jax.random.key(4), (3, 2, 500))
    logits = logits.at[0, 0, 7].set(-jnp.inf)
    tokens = jax.random.randint(jax.random.key(5), (3, 2), 0, 500)
    tokens = tokens.at[0, 0].set(3)

    def reference(x):
        logp = jax.nn.log_softmax(x, axis=-1)
        return jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]

    np.testing.assert_allclose(token_log_probs(logits, tokens),
                               reference(logits), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda x: token_log_probs(x, tokens).sum())(logits)
    np.testing.assert_allclose(grad, jax.grad(
        lambda x: reference(x).sum())(logits), atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_k=-1),
                                    dict(top_p=0.0), dict(top_p=1.5)])
def test_bad_sampling_config(kwargs):
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)
