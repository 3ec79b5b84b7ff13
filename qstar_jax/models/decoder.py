"""Llama-family decoder-only transformer in Flax NNX.

The decoder is written so that the key/value cache lives *outside* it: every
call computes queries, keys and values for the new tokens and hands them to an
`AttendFn`, which decides what the new tokens can see (their own causal window
in prefill; a shared prefix cache plus a per-sample suffix cache in decoding).
The call returns the new keys and values of every layer, and the caller writes
them wherever its cache keeps them. One module therefore serves prefill,
incremental decoding, forked (shared-prefix) decoding and teacher forcing.

Shapes: N rows, L new tokens per row, D width, H query heads, KV key/value
heads, hd head width, V vocabulary.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qstar_jax.models.config import DecoderConfig

# attend(layer, q [N, L, H, hd], k [N, L, KV, hd], v [N, L, KV, hd])
#   -> attention output [N, L, H, hd] (before the output projection).
AttendFn = Callable[[int, jax.Array, jax.Array, jax.Array], jax.Array]


class LayerKV(NamedTuple):
    """Keys and values computed for the new tokens by one layer.

    Attributes:
      k: [N, L, KV, hd] rotated keys.
      v: [N, L, KV, hd] values.
    """

    k: jax.Array
    v: jax.Array


def rotary_tables(positions: jax.Array, head_dim: int,
                  theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables for rotate-half rotary embeddings.

    Args:
      positions: [N, L] integer positions.
      head_dim: hd.
      theta: rotary base.

    Returns:
      (cos, sin), each [N, L, hd] float32.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                                / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates [N, L, heads, hd] by tables [N, L, hd] (Hugging Face layout)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    out = x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin
    return out.astype(x.dtype)


class RMSNorm(nnx.Module):
    """x / rms(x) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float, *, param_dtype: jnp.dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        scale = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True)
                              + self.eps)
        return (x32 * scale).astype(x.dtype) * self.weight[...].astype(x.dtype)


def _linear(d_in: int, d_out: int, bias: bool, rngs: nnx.Rngs,
            config: DecoderConfig) -> nnx.Linear:
    return nnx.Linear(
        d_in, d_out, use_bias=bias, dtype=config.activation_dtype,
        param_dtype=config.parameter_dtype,
        kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


class Attention(nnx.Module):
    """Grouped-query attention projections with rotary embeddings."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = _linear(d, config.num_heads * hd, config.qkv_bias, rngs,
                              config)
        self.k_proj = _linear(d, config.num_kv_heads * hd, config.qkv_bias,
                              rngs, config)
        self.v_proj = _linear(d, config.num_kv_heads * hd, config.qkv_bias,
                              rngs, config)
        self.o_proj = _linear(config.num_heads * hd, d, False, rngs, config)
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = hd

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 attend: Callable[[jax.Array, jax.Array, jax.Array],
                                  jax.Array]) -> tuple[jax.Array, LayerKV]:
        n, l, _ = x.shape
        q = self.q_proj(x).reshape(n, l, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(n, l, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(n, l, self.num_kv_heads, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attend(q, k, v).reshape(n, l, self.num_heads * self.head_dim)
        return self.o_proj(out), LayerKV(k, v)


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _linear(d, f, False, rngs, config)
        self.up_proj = _linear(d, f, False, rngs, config)
        self.down_proj = _linear(f, d, False, rngs, config)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        dt = config.parameter_dtype
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                 param_dtype=dt)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                param_dtype=dt)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x, cos, sin, attend):
        h, kv = self.attn(self.attn_norm(x), cos, sin, attend)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), kv


class Decoder(nnx.Module):
    """Token embedding, N blocks, final norm and (tied or untied) output.

    Example:
      >>> model = Decoder(tiny(), rngs=nnx.Rngs(0))
      >>> hidden, kvs = model(tokens, positions, attend=causal_attend(lengths))
      >>> logits = model.logits(hidden)
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = nnx.Embed(
            config.vocab_size, config.hidden_size,
            dtype=config.activation_dtype, param_dtype=config.parameter_dtype,
            embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.layers = nnx.List([Block(config, rngs=rngs)
                                for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                  param_dtype=config.parameter_dtype)
        if config.tie_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _linear(config.hidden_size, config.vocab_size,
                                   False, rngs, config)

    def __call__(self, tokens: jax.Array, positions: jax.Array,
                 attend: AttendFn) -> tuple[jax.Array, list[LayerKV]]:
        """Runs the blocks over new tokens.

        Args:
          tokens: [N, L] int32 token ids.
          positions: [N, L] int32 absolute positions (for rotary embeddings).
          attend: what the new tokens attend to, layer by layer.

        Returns:
          hidden: [N, L, D] final-normed hidden states.
          kvs: one `LayerKV` ([N, L, KV, hd] each) per layer.
        """
        cfg = self.config
        x = self.embed(tokens)
        cos, sin = rotary_tables(positions, cfg.head_dim, cfg.rope_theta)
        kvs = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin,
                          lambda q, k, v, i=i: attend(i, q, k, v))
            kvs.append(kv)
        return self.final_norm(x), kvs

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Output logits [..., V] in float32 from hidden states [..., D]."""
        if self.lm_head is None:
            out = self.embed.attend(hidden)
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)


def init_decoder(config: DecoderConfig, seed: int = 0) -> Decoder:
    """A randomly initialised decoder (for training from scratch or tests)."""
    return Decoder(config, rngs=nnx.Rngs(seed))
