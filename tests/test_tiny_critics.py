"""Critic specs, saving and loading (the shipped critics are tested in
test_shipped_critics.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.config import tiny
from qstar_jax.models.critic import score_branches
from qstar_jax.models.decoder import init_decoder
from qstar_jax.tasks.tiny_critics import (CriticSpec, build_critic,
                                          load_critic, load_tiny_critics,
                                          round_to_stored, save_critic)


def _randomise(critic, seed):
    for module in (critic.head, critic.evidence):
        if module is not None:
            module.kernel[...] = jax.random.normal(
                jax.random.key(seed), module.kernel[...].shape)
    return critic


@pytest.mark.parametrize("backbone", ["policy", "frozen", "new"])
def test_saved_critic_loads_with_equal_scores(tmp_path, backbone):
    policy = init_decoder(tiny(vocab_size=20, num_layers=1), seed=0)
    spec = CriticSpec(role="qvm", backbone=backbone, evidence=True,
                      head_hidden=8 if backbone == "frozen" else 0,
                      output="sigmoid",
                      decoder=(dataclasses.asdict(tiny(vocab_size=20,
                                                       num_layers=2))
                               if backbone == "new" else None))
    critic = _randomise(build_critic(spec, policy, seed=1), 2)
    if backbone != "new":  # A copy: training it never touches the policy.
        assert critic.backbone is not policy
    round_to_stored(critic)
    save_critic(critic, str(tmp_path), spec, {"note": "test"})
    loaded = load_critic(str(tmp_path))
    assert loaded.output == "sigmoid" and loaded.evidence is not None
    tokens = jnp.array([[1, 5, 6, 7, 0]])
    branches = jnp.array([[[8, 9], [10, 0]]])
    args = (tokens, jnp.array([4]), branches, jnp.array([[2, 1]]))
    logp = jnp.array([[-0.5, -2.0]])
    critic.output = "sigmoid"
    np.testing.assert_array_equal(
        score_branches(loaded, *args, branch_log_probs=logp),
        score_branches(critic, *args, branch_log_probs=logp))


def test_round_to_stored_is_the_float16_grid():
    policy = init_decoder(tiny(vocab_size=20, num_layers=1), seed=0)
    critic = _randomise(build_critic(CriticSpec(role="prm"), policy), 3)
    before = np.asarray(critic.head.kernel[...])
    round_to_stored(critic)
    np.testing.assert_array_equal(critic.head.kernel[...],
                                  before.astype(np.float16)
                                  .astype(np.float32))


def test_bad_specs_and_missing_critics_raise(tmp_path):
    with pytest.raises(ValueError, match="role"):
        CriticSpec(role="judge")
    with pytest.raises(ValueError, match="decoder"):
        CriticSpec(role="qvm", backbone="new")
    with pytest.raises(FileNotFoundError, match="no critic"):
        load_critic(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_tiny_critics(("qvm",), path=str(tmp_path))
