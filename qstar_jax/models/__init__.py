"""Decoder models, configurations and checkpoint loading."""

from qstar_jax.models.checkpoint import CheckpointError, smollm2_gguf_path
from qstar_jax.models.config import (DecoderConfig, preset, smollm2_135m,
                                     tiny)
from qstar_jax.models.decoder import Decoder, init_decoder
from qstar_jax.models.gguf_loader import load_gguf
from qstar_jax.models.safetensors_loader import load_safetensors

__all__ = [
    "CheckpointError", "Decoder", "DecoderConfig", "init_decoder",
    "load_gguf", "load_safetensors", "preset", "smollm2_135m",
    "smollm2_gguf_path", "tiny",
]
