"""Shared test fixtures: the real SmolLM2 model and random tiny critics.

The SmolLM2 wheel is part of the test environment (setup.sh installs it);
without it the fixture fails with the install command rather than skipping.
"""

import gc
import os

import jax
import pytest
from flax import nnx

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# The suite compiles hundreds of programs in one process: it writes none to
# a persistent compilation cache (an environment may enable one), and each
# test module's compiled programs are freed when the module ends.
jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()


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


@pytest.fixture(scope="session")
def token_stop_rule():
    """Factory of `StopRule`s over token ids: `make(vocab, end, delimiters)`
    (no final-answer tokens)."""
    import jax.numpy as jnp

    from qstar_jax.sampling.decode import StopRule

    def make(vocab: int, end: int, delimiters) -> StopRule:
        none = jnp.zeros(vocab, bool)
        return StopRule(none.at[jnp.asarray(delimiters)].set(True),
                        none.at[end].set(True), none)

    return make


@pytest.fixture(scope="session")
def random_qstar_models(random_critic):
    """Factory of Q* models over `vocab` tokens: a random 2-layer policy and
    random critics (PRM seed 1, QVM seed 2)."""
    from qstar_jax.models.config import tiny
    from qstar_jax.models.decoder import init_decoder
    from qstar_jax.search.qstar import QStarModels

    def make(vocab: int) -> QStarModels:
        return QStarModels(
            policy=init_decoder(tiny(vocab_size=vocab, num_layers=2), seed=0),
            prm=random_critic(vocab, 1), qvm=random_critic(vocab, 2))

    return make
