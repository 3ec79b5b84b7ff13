"""Shared test fixtures: the real SmolLM2 model is loaded once per session."""

import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def smollm2():
    """(model, config) of SmolLM2-135M-Instruct loaded from its GGUF."""
    from qstar_jax.models.checkpoint import CheckpointError, smollm2_gguf_path
    from qstar_jax.models.gguf_loader import load_gguf
    try:
        path = smollm2_gguf_path()
    except CheckpointError as e:
        pytest.skip(str(e))
    return load_gguf(path)
