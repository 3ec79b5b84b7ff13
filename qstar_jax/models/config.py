"""Decoder configuration: one frozen dataclass and the named presets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Shape and numerics of a Llama-family decoder-only transformer.

    Attributes:
        vocab_size: number of token ids V.
        hidden_size: model width D.
        num_layers: number of transformer blocks.
        num_heads: query heads H.
        num_kv_heads: key/value heads KV (grouped-query attention); H % KV == 0.
        head_dim: width of one head hd (need not equal D // H).
        intermediate_size: SwiGLU hidden width F.
        rope_theta: rotary embedding base.
        rms_norm_eps: epsilon inside RMSNorm.
        tie_embeddings: output projection is the transposed token embedding.
        qkv_bias: q/k/v projections carry a bias (Qwen2).
        max_seq_len: longest position the model is meant for (context length).
        dtype: activation dtype name ('float32' on CPU, 'bfloat16' on accelerators).
        param_dtype: parameter dtype name.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False
    max_seq_len: int = 2048
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads",
                    "num_kv_heads", "head_dim", "intermediate_size",
                    "max_seq_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DecoderConfig.{name} must be positive, "
                                 f"got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads}) for grouped-query "
                "attention")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for rotary embeddings, "
                             f"got {self.head_dim}")
        for name in ("dtype", "param_dtype"):
            jnp.dtype(getattr(self, name))  # TypeError on an unknown name.

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def parameter_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def num_parameters(self) -> int:
        """Parameter count implied by the shapes."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.qkv_bias else 0)
        block = attn + 3 * d * f + 2 * d
        out = 0 if self.tie_embeddings else d * v
        return v * d + self.num_layers * block + d + out

    def flops_per_token(self, context: int = 0) -> int:
        """Forward FLOPs for one new token attending to `context` cached tokens."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        matmul = d * q + 2 * d * kv + q * d + 3 * d * f
        attn = 2 * self.num_heads * self.head_dim * (context + 1)
        return 2 * (self.num_layers * (matmul + attn) + d * v)


def backend_dtype(backend: str | None = None) -> str:
    """Activation dtype for a backend: 'float32' on CPU (bfloat16 is emulated
    and slow there), 'bfloat16' on GPU and TPU.

    Example:
      >>> model, config = load_gguf(path, dtype=backend_dtype())
    """
    backend = backend or jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"


def smollm2_135m(**overrides) -> DecoderConfig:
    """SmolLM2-135M(-Instruct): 30 layers, D=576, 9 query / 3 kv heads."""
    base = dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                num_kv_heads=3, head_dim=64, intermediate_size=1536,
                rope_theta=100_000.0, rms_norm_eps=1e-5, tie_embeddings=True,
                max_seq_len=8192)
    return DecoderConfig(**(base | overrides))


def tiny(vocab_size: int = 64, **overrides) -> DecoderConfig:
    """About 1.6M parameters at a small vocabulary; trains on a CPU."""
    base = dict(vocab_size=vocab_size, hidden_size=192, num_layers=4,
                num_heads=6, num_kv_heads=2, head_dim=32,
                intermediate_size=512, rope_theta=10_000.0, rms_norm_eps=1e-5,
                tie_embeddings=True, max_seq_len=512)
    return DecoderConfig(**(base | overrides))


PRESETS = {"smollm2-135m": smollm2_135m, "tiny": tiny}


def preset(name: str, **overrides) -> DecoderConfig:
    """Returns the named preset ('smollm2-135m' or 'tiny') with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
