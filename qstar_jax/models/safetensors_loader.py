"""Hugging Face checkpoints: config.json plus safetensors (Llama, Qwen2, SmolLM).

Reads `model.safetensors` or the shards listed in
`model.safetensors.index.json`. float32, float16 and bfloat16 tensors are
read with `safetensors.numpy` (bfloat16 through ml_dtypes).

Example:
  >>> model, config = load_safetensors("path/to/checkpoint_dir")
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open

from qstar_jax.models.checkpoint import (CheckpointError, build_decoder,
                                         collect_tensors)
from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder

MODEL_TYPES = ("llama", "qwen2", "smollm", "smollm2")

_NAMES = {
    "embed": "model.embed_tokens.weight",
    "final_norm": "model.norm.weight",
    "lm_head": "lm_head",
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "mlp_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "q": "model.layers.{i}.self_attn.q_proj",
    "k": "model.layers.{i}.self_attn.k_proj",
    "v": "model.layers.{i}.self_attn.v_proj",
    "o": "model.layers.{i}.self_attn.o_proj",
    "gate": "model.layers.{i}.mlp.gate_proj",
    "up": "model.layers.{i}.mlp.up_proj",
    "down": "model.layers.{i}.mlp.down_proj",
}


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e


def config_from_hf(hf: dict, **overrides) -> DecoderConfig:
    """Maps a Hugging Face config.json dictionary to a `DecoderConfig`."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"unsupported model_type {model_type!r}; supported: "
            f"{MODEL_TYPES}")
    # transformers 5 writes rope_parameters {rope_theta, rope_type, ...};
    # older configs have a top-level rope_theta and optional rope_scaling.
    rope = hf.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"invalid rope_parameters {rope!r}")
    for key in ("rope_parameters", "rope_scaling"):
        params = hf.get(key)
        if not params:
            continue
        # rope_parameters without a type is plain rotary (theta only).
        unnamed = "default" if key == "rope_parameters" else None
        kind = (params.get("rope_type", params.get("type", unnamed))
                if isinstance(params, dict) else None)
        if kind != "default":
            raise CheckpointError(
                f"{key} {params!r} is not supported (rope scaling "
                f"{kind!r}; only unscaled 'default' rotary embeddings)")
    theta = hf.get("rope_theta")
    if theta is None:
        theta = rope.get("rope_theta", 10_000.0)
    try:
        heads = int(hf["num_attention_heads"])
        width = int(hf["hidden_size"])
        base = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=width,
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or width // heads),
            intermediate_size=int(hf["intermediate_size"]),
            rope_theta=float(theta),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=(model_type == "qwen2"
                      or bool(hf.get("attention_bias", False))),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        )
        return DecoderConfig(**(base | overrides))
    except KeyError as e:
        raise CheckpointError(f"config.json lacks the field {e}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config.json: {e}") from e


def _shard_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map")
        files = sorted(set(weight_map.values()))
    else:
        files = ["model.safetensors"]
    paths = [os.path.join(directory, f) for f in files]
    for p in paths:
        if not os.path.isfile(p):
            raise CheckpointError(f"safetensors file not found: {p}")
    return paths


def load_safetensors(directory: str, config: DecoderConfig | None = None,
                     **overrides) -> tuple[Decoder, DecoderConfig]:
    """Loads a Hugging Face checkpoint directory.

    Args:
      directory: holds config.json and model.safetensors (or shards + index).
      config: an explicit configuration; it must match the tensors. By
        default it is read from config.json.
      **overrides: configuration fields to replace (for example dtype).

    Returns:
      (model, config).

    Raises:
      CheckpointError: a missing/corrupt file, an unsupported model type, or
        tensors that do not match the configuration.
    """
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if config is None:
        config = config_from_hf(
            _read_json(os.path.join(directory, "config.json")), **overrides)
    elif overrides:
        config = DecoderConfig(**(vars(config) | overrides))
    tensors: dict[str, np.ndarray] = {}
    for path in _shard_files(directory):
        try:
            with safe_open(path, framework="numpy") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name)
        except Exception as e:  # safetensors raises its own error types.
            raise CheckpointError(
                f"{path} is not a readable safetensors file "
                f"({type(e).__name__}: {e})") from e
    # Tied checkpoints sometimes still store lm_head.weight; ignore it then.
    ignore = frozenset({"lm_head.weight"} if config.tie_embeddings else ())
    mapped = collect_tensors(
        config, tensors, lambda arr: np.asarray(arr, np.float32), _NAMES,
        unpermute=False, source=directory, ignore=ignore)
    return build_decoder(config, mapped, directory), config
