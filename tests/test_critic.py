"""Critic modules: one pass scores every step boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.models.config import tiny
from qstar_jax.models.critic import (Critic, last_token_scores, score_branches,
                                     scores_at)
from qstar_jax.models.decoder import init_decoder
from qstar_jax.sampling.states import pad_states


def _random_head(critic, seed):
    kernel = jax.random.normal(jax.random.key(seed),
                               critic.head.kernel[...].shape)
    critic.head.kernel[...] = kernel


def test_one_pass_equals_one_pass_per_prefix():
    critic = Critic(tiny(vocab_size=40, num_layers=2), rngs=nnx.Rngs(0))
    _random_head(critic, 1)
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 40, n).tolist() for n in (11, 6, 9)]
    tokens, lengths = pad_states(rows, width=11)
    step_ends = jnp.asarray([[2, 6, 10], [1, 5, -1], [3, 8, -1]], jnp.int32)
    one_pass = np.asarray(scores_at(critic, tokens, lengths, step_ends))
    for i, row in enumerate(rows):
        for j, end in enumerate(np.asarray(step_ends[i])):
            if end < 0:
                assert one_pass[i, j] == 0.0
                continue
            prefix, plen = pad_states([row[:end + 1]], width=end + 1)
            alone = float(last_token_scores(critic, prefix, plen)[0])
            np.testing.assert_allclose(one_pass[i, j], alone, rtol=1e-5,
                                       atol=1e-6)


def test_branches_equal_full_sequences():
    """score_branches == last-token score of prefix + branch, computed alone,
    for whole-state prefixes, per-branch prefixes and empty branches."""
    critic = Critic(tiny(vocab_size=40, num_layers=2), rngs=nnx.Rngs(0))
    _random_head(critic, 2)
    rng = np.random.default_rng(1)
    rows = [rng.integers(3, 40, n).tolist() for n in (12, 5)]
    tokens, lengths = pad_states(rows, width=12)
    m, t = 5, 4
    branch_len = rng.integers(0, t + 1, (2, m)).astype(np.int32)
    branch_len[0, 0] = 0
    branches = rng.integers(3, 40, (2, m, t)).astype(np.int32)
    prefix_len = np.stack([rng.integers(1, n + 1, m) for n in (12, 5)])
    for per_branch in (False, True):
        plen = prefix_len if per_branch else np.asarray(lengths)[:, None] \
            .repeat(m, 1)
        got = np.asarray(score_branches(
            critic, tokens, lengths, jnp.asarray(branches),
            jnp.asarray(branch_len),
            jnp.asarray(plen, jnp.int32) if per_branch else None))
        for i, row in enumerate(rows):
            for j in range(m):
                seq = row[:plen[i, j]] + branches[i, j, :branch_len[i, j]] \
                    .tolist()
                alone, alen = pad_states([seq], width=len(seq))
                want = float(last_token_scores(critic, alone, alen)[0])
                np.testing.assert_allclose(got[i, j], want, rtol=1e-4,
                                           atol=1e-5)


def test_frozen_backbone_trains_only_the_head():
    policy = init_decoder(tiny(vocab_size=40, num_layers=2), seed=0)
    critic = Critic(backbone=policy, frozen_backbone=True, rngs=nnx.Rngs(1))
    _random_head(critic, 2)
    tokens, lengths = pad_states([[5, 6, 7], [8, 9, 10]], width=3)

    def loss(c):
        return jnp.sum(last_token_scores(c, tokens, lengths) ** 2)

    grads = nnx.grad(loss)(critic)
    backbone_norm = sum(float(jnp.abs(g).sum()) for g in
                        jax.tree.leaves(nnx.state(grads.backbone)))
    assert backbone_norm == 0.0
    assert float(jnp.abs(grads.head.kernel[...]).sum()) > 0


def test_exactly_one_backbone_source():
    with pytest.raises(ValueError, match="exactly one"):
        Critic(rngs=nnx.Rngs(0))


def test_sigmoid_output_squashes_the_same_logits():
    critic = Critic(tiny(vocab_size=40, num_layers=1), rngs=nnx.Rngs(0))
    _random_head(critic, 4)
    tokens, lengths = pad_states([[5, 6, 7, 8], [9, 10]], width=4)
    logits = np.asarray(critic(tokens, lengths))
    critic.output = "sigmoid"
    probs = np.asarray(critic(tokens, lengths))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    with pytest.raises(ValueError, match="output"):
        Critic(tiny(vocab_size=40), output="tanh", rngs=nnx.Rngs(0))
