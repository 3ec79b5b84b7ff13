"""Shared test fixtures: the real SmolLM2 model and random tiny critics.

The SmolLM2 wheel is part of the test environment (setup.sh installs it);
without it the fixture fails with the install command rather than skipping.
"""

import os

import jax
import pytest
from flax import nnx

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def smollm2():
    """(model, config) of SmolLM2-135M-Instruct loaded from its GGUF."""
    from qstar_jax.models.checkpoint import smollm2_gguf_path
    from qstar_jax.models.gguf_loader import load_gguf
    return load_gguf(smollm2_gguf_path())


@pytest.fixture(scope="session")
def random_critic():
    """Factory of tiny critics with random (not zero) heads."""
    from qstar_jax.models.config import tiny
    from qstar_jax.models.critic import Critic

    def make(vocab: int, seed: int, num_layers: int = 1) -> Critic:
        critic = Critic(tiny(vocab_size=vocab, num_layers=num_layers),
                        rngs=nnx.Rngs(seed))
        critic.head.kernel[...] = jax.random.normal(
            jax.random.key(seed), critic.head.kernel[...].shape)
        return critic

    return make
