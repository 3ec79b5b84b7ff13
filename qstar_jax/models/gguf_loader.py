"""GGUF checkpoints (llama.cpp) for the `llama` and `qwen2` architectures.

Supported tensor types: F32, F16, BF16, Q8_0, Q4_0 and Q4_1, dequantized to
float32 on the host with the `gguf` package. llama.cpp permutes the q/k rows
of `llama` models (not of `qwen2`); they are un-permuted on load.

Example:
  >>> model, config = load_gguf(smollm2_gguf_path())
"""

from __future__ import annotations

import os

import gguf
import numpy as np

from qstar_jax.models.checkpoint import (CheckpointError, build_decoder,
                                         collect_tensors)
from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder

_T = gguf.GGMLQuantizationType
SUPPORTED_TYPES = (_T.F32, _T.F16, _T.BF16, _T.Q8_0, _T.Q4_0, _T.Q4_1)
ARCHITECTURES = ("llama", "qwen2")

_NAMES = {
    "embed": "token_embd.weight",
    "final_norm": "output_norm.weight",
    "lm_head": "output",
    "attn_norm": "blk.{i}.attn_norm.weight",
    "mlp_norm": "blk.{i}.ffn_norm.weight",
    "q": "blk.{i}.attn_q", "k": "blk.{i}.attn_k", "v": "blk.{i}.attn_v",
    "o": "blk.{i}.attn_output",
    "gate": "blk.{i}.ffn_gate", "up": "blk.{i}.ffn_up",
    "down": "blk.{i}.ffn_down",
}


def open_gguf(path: str) -> gguf.GGUFReader:
    """Opens (memory-maps) a GGUF file, with clear errors for bad files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # The reader raises many types on corrupt data.
        raise CheckpointError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {e})"
        ) from e


def _field(reader: gguf.GGUFReader, name: str, default=None):
    field = reader.fields.get(name)
    if field is None:
        if default is None:
            raise CheckpointError(f"GGUF metadata field {name!r} is missing")
        return default
    return field.contents()


def config_from_gguf(reader: gguf.GGUFReader, **overrides) -> DecoderConfig:
    """Reads the decoder configuration from GGUF metadata.

    Args:
      reader: an open GGUF file.
      **overrides: `DecoderConfig` fields to replace (for example dtype).
    """
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"unsupported GGUF architecture {arch!r}; supported: "
            f"{ARCHITECTURES}")
    scaling = reader.fields.get(f"{arch}.rope.scaling.type")
    if scaling is not None and scaling.contents() not in ("none", ""):
        raise CheckpointError(
            f"rope scaling {scaling.contents()!r} is not supported")
    names = {t.name for t in reader.tensors}
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    width = int(_field(reader, f"{arch}.embedding_length"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size",
                   len(tokens.data) if tokens is not None else None)
    base = dict(
        vocab_size=int(vocab),
        hidden_size=width,
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv",
                                heads)),
        head_dim=int(_field(reader, f"{arch}.rope.dimension_count",
                            width // heads)),
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10_000.0)),
        rms_norm_eps=float(_field(
            reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        max_seq_len=int(_field(reader, f"{arch}.context_length", 2048)),
    )
    try:
        return DecoderConfig(**(base | overrides))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid configuration from GGUF: {e}") from e


def dequantize_tensor(tensor) -> np.ndarray:
    """float32 array ([out, in] for matrices) of one GGUF tensor."""
    if tensor.tensor_type not in SUPPORTED_TYPES:
        raise CheckpointError(
            f"tensor {tensor.name} has unsupported type "
            f"{tensor.tensor_type.name}; supported: "
            f"{[t.name for t in SUPPORTED_TYPES]}")
    try:
        out = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except Exception as e:
        raise CheckpointError(
            f"tensor {tensor.name} could not be decoded ({e})") from e
    expected = tuple(int(d) for d in reversed(tensor.shape))
    if out.shape != expected:
        raise CheckpointError(
            f"tensor {tensor.name} decodes to shape {out.shape}, its header "
            f"says {expected}")
    return np.asarray(out, np.float32)


def load_gguf(path: str, config: DecoderConfig | None = None,
              **overrides) -> tuple[Decoder, DecoderConfig]:
    """Loads a GGUF checkpoint.

    Args:
      path: the .gguf file.
      config: an explicit configuration; it must match the tensors. By
        default it is read from the file's metadata.
      **overrides: configuration fields to replace (for example
        dtype='bfloat16').

    Returns:
      (model, config).

    Raises:
      CheckpointError: a missing/corrupt file, an unsupported architecture or
        tensor type, or tensors that do not match the configuration.
    """
    reader = open_gguf(path)
    if config is None:
        config = config_from_gguf(reader, **overrides)
    elif overrides:
        config = DecoderConfig(**(vars(config) | overrides))
    arch = _field(reader, "general.architecture")
    tensors = {t.name: t for t in reader.tensors}
    mapped = collect_tensors(config, tensors, dequantize_tensor, _NAMES,
                             unpermute=(arch == "llama"), source=path)
    return build_decoder(config, mapped, path), config
