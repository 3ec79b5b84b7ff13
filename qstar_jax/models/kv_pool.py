"""A per-node key/value pool: every search node's step encoded once.

A search tree of N slots per problem stores, for one model (the policy or a
critic), the keys/values of each node's step in its slot, per layer, and
the keys/values of each problem's prompt once. A node's state (prompt plus
the steps along its path) is then read in place: its path's keys/values are
gathered by node into W dense slots (`gather_path`) and new tokens attend to
[prompt] + [path] + [their own tokens] (`models.tree_attention`). Nothing is
copied per child, and the prompt is encoded once per problem.

Shapes: B problems, N slots, T tokens per step, KV key/value heads, hd head
width, P0 prompt slots, W path slots.

Memory is explicit: `pool_bytes_per_node` gives the bytes a node costs for
a model, and `check_pool_fits` raises `PoolTooLargeError` naming the sizes
when a requested tree does not fit a byte budget.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from qstar_jax.models.attention import PrefixCache, causal_attend
from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder, LayerKV
from qstar_jax.models.tree_attention import PathKV, tree_branch_attend


class PoolTooLargeError(ValueError):
    """A requested tree's key/value pool exceeds the memory budget."""


class ModelPool(NamedTuple):
    """One model's cached keys/values for B search trees.

    Attributes:
      prompt: the prompts' cache ([B, KV, P0, hd] per layer, lengths [B]).
      prompt_hidden: [B, D] the model's final hidden state at each prompt's
        last token (the policy's next-token logits at the root).
      step_k: per layer [B, N, T, KV, hd] keys of each node's step.
      step_v: per layer [B, N, T, KV, hd] values of each node's step.
    """

    prompt: PrefixCache
    prompt_hidden: jax.Array
    step_k: tuple[jax.Array, ...]
    step_v: tuple[jax.Array, ...]


def pool_bytes_per_node(config: DecoderConfig, max_step_tokens: int) -> int:
    """Bytes one node's step costs in a model's pool (keys and values of T
    tokens in every layer, in the model's activation dtype)."""
    itemsize = jnp.dtype(config.activation_dtype).itemsize
    return (2 * config.num_layers * max_step_tokens * config.num_kv_heads
            * config.head_dim * itemsize)


def check_pool_fits(configs: Sequence[DecoderConfig], *, batch: int,
                    num_nodes: int, max_step_tokens: int,
                    budget_bytes: int) -> int:
    """Total pool bytes of B trees of N nodes for the given models.

    Raises:
      PoolTooLargeError: the total exceeds `budget_bytes`; the message names
        the bytes per node, the node count and what would fit.
    """
    per_node = sum(pool_bytes_per_node(c, max_step_tokens) for c in configs)
    total = per_node * batch * num_nodes
    if total > budget_bytes:
        fits = budget_bytes // max(per_node * batch, 1)
        raise PoolTooLargeError(
            f"check_pool_fits: B = {batch} trees of N = {num_nodes} nodes "
            f"need {total / 2**20:.1f} MiB of key/value pool "
            f"({per_node} bytes per node for {len(configs)} models, T = "
            f"{max_step_tokens}) but the budget is "
            f"{budget_bytes / 2**20:.1f} MiB; at most N = {fits} nodes fit "
            f"(raise the budget, or use the re-encoding path)")
    return total


def init_model_pool(model: Decoder, prompt_tokens: jax.Array,
                    prompt_lengths: jax.Array, *, num_nodes: int,
                    max_step_tokens: int) -> ModelPool:
    """Encodes the prompts once and allocates an empty step pool.

    Args:
      model: the decoder (a critic passes its backbone).
      prompt_tokens: [B, P0] int32 right-padded prompts.
      prompt_lengths: [B] int32 real tokens, in [1, P0].
      num_nodes: N; max_step_tokens: T.
    """
    b, p = prompt_tokens.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    hidden, kvs = model(prompt_tokens, positions,
                        causal_attend(prompt_lengths))
    cfg = model.config
    shape = (b, num_nodes, max_step_tokens, cfg.num_kv_heads, cfg.head_dim)
    dtype = kvs[0].k.dtype
    return ModelPool(
        prompt=PrefixCache.from_layer_kvs(kvs, prompt_lengths),
        prompt_hidden=hidden[jnp.arange(b), prompt_lengths - 1],
        step_k=tuple(jnp.zeros(shape, dtype) for _ in kvs),
        step_v=tuple(jnp.zeros(shape, dtype) for _ in kvs))


class PathIndex(NamedTuple):
    """Where each dense path slot of B rows comes from in the pool.

    Attributes:
      source: [B, W] int32 flat pool index node * T + t (0 where unused).
      lengths: [B] int32 real path tokens (clipped to W).
      overflow: [B] bool the path has more than W tokens (its tail is cut).
    """

    source: jax.Array
    lengths: jax.Array
    overflow: jax.Array


def path_index(path: jax.Array, step_lengths: jax.Array, num_slots: int,
               max_step_tokens: int) -> PathIndex:
    """The dense layout of the steps of given path nodes.

    Args:
      path: [B, D] int32 slots in path order (-1 entries skipped; the root,
        which has no step, may be included).
      step_lengths: [B, D] int32 tokens of each entry's step.
      num_slots: W.
      max_step_tokens: T.
    """
    b, d = path.shape
    lengths = jnp.where(path >= 0, step_lengths, 0)
    offsets = jnp.cumsum(lengths, axis=1) - lengths              # [B, D]
    t = jnp.arange(max_step_tokens)
    target = offsets[:, :, None] + t                             # [B, D, T]
    keep = (t < lengths[:, :, None]) & (target < num_slots)
    target = jnp.where(keep, target, num_slots)                  # dropped
    flat = jnp.maximum(path, 0)[:, :, None] * max_step_tokens + t
    source = jnp.zeros((b, num_slots), jnp.int32).at[
        jnp.arange(b)[:, None, None], target].set(flat, mode="drop")
    total = jnp.sum(lengths, axis=1)
    return PathIndex(source=source, lengths=jnp.minimum(total, num_slots),
                     overflow=total > num_slots)


def gather_path(pool: ModelPool, index: PathIndex) -> PathKV:
    """The keys/values of each row's path, [B, KV, W, hd] per layer."""
    def take(x):
        b, n, t, kv, hd = x.shape
        flat = x.reshape(b, n * t, kv, hd)
        return jnp.take_along_axis(flat, index.source[:, :, None, None],
                                   axis=1).transpose(0, 2, 1, 3)
    return PathKV(k=tuple(take(k) for k in pool.step_k),
                  v=tuple(take(v) for v in pool.step_v),
                  lengths=index.lengths)


def extend_path(path: PathKV, kvs: Sequence[LayerKV],
                lengths: jax.Array) -> PathKV:
    """`path` with one more step appended to each row.

    Args:
      path: [B, KV, W, hd] per layer.
      kvs: per layer the step's keys/values [B, T, KV, hd].
      lengths: [B] int32 real tokens of the step (0: nothing appended).
    """
    b, w = path.k[0].shape[0], path.k[0].shape[2]
    t = kvs[0].k.shape[1]
    pos = path.lengths[:, None] + jnp.arange(t)                  # [B, T]
    target = jnp.where((jnp.arange(t) < lengths[:, None]) & (pos < w), pos,
                       w)
    rows = jnp.arange(b)[:, None]

    def put(dense, new):
        # rows and target around a slice: the indexed view is [B, T, KV, hd].
        return dense.at[rows, :, target].set(new.astype(dense.dtype),
                                             mode="drop")
    return PathKV(k=tuple(put(d, kv.k) for d, kv in zip(path.k, kvs)),
                  v=tuple(put(d, kv.v) for d, kv in zip(path.v, kvs)),
                  lengths=jnp.minimum(path.lengths + lengths, w))


def write_steps(pool: ModelPool, nodes: jax.Array,
                kvs: Sequence[LayerKV]) -> ModelPool:
    """Stores one step per row in the pool.

    Args:
      pool: the pool.
      nodes: [B] int32 slots (negative: not written).
      kvs: per layer the steps' keys/values [B, T, KV, hd].
    """
    n = pool.step_k[0].shape[1]
    target = jnp.where(nodes >= 0, nodes, n)
    rows = jnp.arange(nodes.shape[0])

    def put(cache, new):
        return cache.at[rows, target].set(new.astype(cache.dtype),
                                          mode="drop")
    return pool._replace(
        step_k=tuple(put(c, kv.k) for c, kv in zip(pool.step_k, kvs)),
        step_v=tuple(put(c, kv.v) for c, kv in zip(pool.step_v, kvs)))


def encode_branches(model: Decoder, pool: ModelPool, path: PathKV,
                    tokens: jax.Array) -> tuple[jax.Array, list[LayerKV]]:
    """Runs M branches of T tokens per row on top of prompt + path.

    Args:
      model: the decoder (a critic passes its backbone; see `Critic.hidden`
        for the frozen case).
      pool: the model's pool (its prompt cache).
      path: the rows' paths in this model's keys/values.
      tokens: [B, M, T] int32 branch tokens (padding after each branch's
        length never reaches its real tokens: the mask is causal).

    Returns:
      hidden [B*M, T, D] and per layer keys/values [B*M, T, KV, hd].
    """
    b, m, t = tokens.shape
    start = pool.prompt.lengths + path.lengths                   # [B]
    positions = jnp.broadcast_to(
        start[:, None, None] + jnp.arange(t, dtype=jnp.int32),
        (b, m, t)).reshape(b * m, t)
    return model(tokens.reshape(b * m, t), positions,
                 tree_branch_attend(pool.prompt, path, m))
