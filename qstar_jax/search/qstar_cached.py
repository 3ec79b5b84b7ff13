"""Q* from a per-node key/value cache: cost per expansion flat in depth.

The re-encoding Q* (`qstar.expand_nodes`) rebuilds a node's whole token
state and encodes it again for the policy and for each critic at every
expansion, so an expansion costs more the deeper its node. Here every model
keeps a `kv_pool.ModelPool`: the prompt encoded once per problem and each
node's step encoded once, in its slot. Expanding node x then encodes only
new tokens:

* staging (after each iteration's insertions, for the node A* pops next):
  x's own step, T tokens per model, on top of its ancestors' keys/values
  gathered from the pool by node; the result is written to x's slot and
  x's dense path (ancestors + x) is kept for the expansion;
* expansion (`expand_cached`, an `ExpandFn`): the policy decodes M samples
  on top of [prompt] + [path] (`tree_decode_attend`), and each critic
  encodes the K chosen steps on top of its own [prompt] + [path]
  (`tree_branch_attend`) and reads its score at each step's last token.

The pools live in the tree (`CachedAStarNodes`, a subclass of A*'s
`AStarNodes` whose `after_expand` hook does the staging), so the search is
`astar_search` itself: same pops, same tie rules, same keys. The staging
runs for every row at every iteration (fixed shapes) and the next node is
the one `best_open_node` returns, which A* pops next (the 'edge' heuristic:
nothing changes f between the insertion and the next pop).

Counted per row in `CachedAStarNodes.encoded_tokens`: the real tokens whose
keys/values a model computed for the row's expansions (staged steps, the
policy's sampled tokens, the critics' branch tokens); per expansion this
does not grow with depth, unlike the re-encoding path's state prefills.

Example:
  >>> result = jax.jit(qstar_cached_search, static_argnames="config")(
  ...     models, prompt_tokens, prompt_lengths, keys, stop, config=config)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from qstar_jax.kernels.tree_decode import tree_decode_attention
from qstar_jax.models.critic import Critic, step_evidence
from qstar_jax.models.kv_pool import (ModelPool, check_pool_fits,
                                      encode_branches, extend_path,
                                      gather_path, init_model_pool,
                                      path_index, write_steps)
from qstar_jax.models.tree_attention import PathKV, tree_decode_attend
from qstar_jax.sampling.decode import StopRule, sample_continuations
from qstar_jax.sampling.proposer import select_distinct
from qstar_jax.search.astar import SearchResult, astar_search
from qstar_jax.search.astar_tree import AStarNodes, astar_nodes, \
    best_open_node
from qstar_jax.search.contracts import check_prompts
from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.step_limits import classify_steps
from qstar_jax.search.tool_check import checked_steps
from qstar_jax.search.tree import Tree, init_tree, node_values, path_nodes

DEFAULT_POOL_BUDGET = 8 * 2**30
"""Bytes of key/value pool a cached search may allocate by default."""


class QStarPools(NamedTuple):
    """The pools of the policy and of the two critics' backbones."""

    policy: ModelPool
    prm: ModelPool
    qvm: ModelPool


class StagedNode(NamedTuple):
    """The next node of each row, ready to expand.

    Attributes:
      node: [B] int32 its slot (A*'s next pop).
      paths: per model (policy, PRM, QVM) its dense path keys/values
        (ancestors' steps and its own), [B, KV, W, hd] per layer.
      next_hidden: [B, D] the policy's hidden state at its last token.
      step_kvs: per model, per layer, the keys/values of its own step
        ([B, T, KV, hd]), written to its slot by the next staging.
      written: [B] int32 its slot where it has a step (-1: the root).
    """

    node: jax.Array
    paths: tuple[PathKV, PathKV, PathKV]
    next_hidden: jax.Array
    step_kvs: tuple
    written: jax.Array


@flax.struct.dataclass
class CachedAStarNodes(AStarNodes):
    """A*'s per-node arrays plus the Q* models' key/value pools.

    Attributes (beyond `AStarNodes`):
      pools: `QStarPools`, each node's step in every model.
      staged: `StagedNode`, the next node's prepared state.
      models: the `QStarModels` (a pytree, carried so the hook can run
        them; the same arrays the expansion closes over).
      encoded_tokens: [B] int32 real tokens encoded for the row's
        expansions (see the module docstring).
      config: the static `QStarConfig`.
      path_slots: W, static.
    """

    pools: Any = None
    staged: Any = None
    models: Any = None
    encoded_tokens: jax.Array | None = None
    config: Any = flax.struct.field(pytree_node=False, default=None)
    path_slots: int = flax.struct.field(pytree_node=False, default=0)

    def after_expand(self, tree: Tree, parent: jax.Array,
                     expansion: Expansion,
                     expanded: jax.Array) -> "CachedAStarNodes":
        """Counts the expansion's tokens and stages the next node."""
        step_len = node_values(tree.step_lengths, parent)
        spent = (3 * step_len + expansion.generated_tokens
                 + 2 * jnp.sum(expansion.step_lengths, axis=1))
        nodes = self.replace(encoded_tokens=self.encoded_tokens + jnp.where(
            expanded, spent, 0).astype(jnp.int32))
        return stage_next_node(tree.replace(extra=nodes))


def _backbones(models) -> tuple:
    return models.policy, models.prm.backbone, models.qvm.backbone


def stage_states(models, pools: QStarPools, ancestors: jax.Array,
                 ancestor_lengths: jax.Array, step_tokens: jax.Array,
                 step_lengths: jax.Array, node: jax.Array,
                 path_slots: int) -> StagedNode:
    """Encodes one node's step per row on top of its ancestors, per model.

    Args:
      models: the `QStarModels`.
      pools: their pools (the ancestors' steps already filed).
      ancestors: [B, D] int32 pool slots of the node's ancestors in path
        order (-1 entries skipped; the root, without a step, may be in).
      ancestor_lengths: [B, D] int32 their step lengths.
      step_tokens: [B, T] int32 the node's own step; step_lengths: [B].
      node: [B] int32 the node's pool slot (where `step_kvs` will go).
      path_slots: W.

    Returns:
      The `StagedNode` (paths include the node's own step).
    """
    t = step_tokens.shape[1]
    index = path_index(ancestors, ancestor_lengths, path_slots, t)
    paths, hiddens, step_kvs = [], [], []
    for model, pool in zip(_backbones(models), pools):
        before = gather_path(pool, index)
        hidden, kvs = encode_branches(model, pool, before,
                                      step_tokens[:, None])
        paths.append(extend_path(before, kvs, step_lengths))
        hiddens.append(hidden)
        step_kvs.append(tuple(kvs))
    b = node.shape[0]
    last = hiddens[0][jnp.arange(b), jnp.maximum(step_lengths - 1, 0)]
    next_hidden = jnp.where((step_lengths > 0)[:, None], last,
                            pools[0].prompt_hidden)
    return StagedNode(
        node=node, paths=tuple(paths), next_hidden=next_hidden,
        step_kvs=tuple(step_kvs),
        written=jnp.where(step_lengths > 0, node, -1).astype(jnp.int32))


def file_staged_step(pools: QStarPools, staged: StagedNode) -> QStarPools:
    """The pools with the staged node's step keys/values in its slot."""
    return QStarPools(*(write_steps(pool, staged.written, kvs)
                        for pool, kvs in zip(pools, staged.step_kvs)))


def stage_next_node(tree: Tree) -> CachedAStarNodes:
    """Files the previous staged node's step and stages the next node.

    The previous staged node's step keys/values go to its slot first (it
    has been popped; if it was expanded, its children's paths pass through
    it). Then the node `best_open_node` gives (A*'s next pop) is staged
    (`stage_states`): its ancestors gathered from the pools, its own step
    encoded on top. Writing before reading keeps the pools updated in place
    inside the search loop (XLA copies a buffer read before its in-place
    update).

    Args:
      tree: a tree whose `extra` is `CachedAStarNodes`.

    Returns:
      The nodes with the pools updated and `staged` set to the next node.
    """
    nodes: CachedAStarNodes = tree.extra
    pools = nodes.pools
    if nodes.staged is not None:
        pools = file_staged_step(pools, nodes.staged)
    node = best_open_node(tree)
    path = path_nodes(tree, node, min(nodes.path_slots, tree.capacity - 1))
    ancestors = jnp.where(path == node[:, None], -1, path)
    staged = stage_states(
        nodes.models, pools, ancestors,
        node_values(tree.step_lengths, ancestors),
        node_values(tree.step_tokens, node),
        node_values(tree.step_lengths, node), node, nodes.path_slots)
    return nodes.replace(pools=pools, staged=staged)


def _critic_scores(critic: Critic, pool: ModelPool, path: PathKV,
                   proposals) -> jax.Array:
    """[B, K] critic scores at the last token of each proposed step."""
    b, k, _ = proposals.tokens.shape
    hidden, _ = encode_branches(critic.backbone, pool, path,
                                proposals.tokens)
    last = jnp.maximum(proposals.lengths - 1, 0).reshape(b * k)
    evidence = (None if critic.evidence is None else step_evidence(
        proposals.log_probs, proposals.lengths).reshape(b * k, -1))
    return critic.score(hidden[jnp.arange(b * k), last],
                        evidence).reshape(b, k)


def expand_staged(models, stop: StopRule, config, pools: QStarPools,
                  staged: StagedNode, keys: jax.Array, *,
                  kernel=None) -> Expansion:
    """The staged nodes' top-K steps with PRM rewards and QVM values.

    Gives the same `Expansion` as `qstar.expand_states` on the nodes' token
    states (up to float rounding): the same proposals from the same keys,
    the same critic scores, the same step rules
    (`step_limits.classify_steps`), the same `tool_check` penalty.

    Args:
      models, stop, config: as for `qstar.expand_states`.
      pools: the pools (their prompt caches are read).
      staged: the nodes' prepared paths and next-token state.
      keys: [B].
      kernel: the decode attention kernel (see `tree_decode_attend`).
    """
    pol_pool, pol_path = pools.policy, staged.paths[0]
    proposer = config.proposer
    policy = models.policy
    conts = sample_continuations(
        policy, pol_pool.prompt, policy.logits(staged.next_hidden), keys,
        num_samples=proposer.num_samples, max_tokens=proposer.max_step_tokens,
        stop=stop, sampling=proposer.sampling, pad_id=proposer.pad_id,
        attend_fn=functools.partial(tree_decode_attend, pol_pool.prompt,
                                    pol_path, kernel=kernel),
        start_positions=pol_pool.prompt.lengths + pol_path.lengths)
    proposals = select_distinct(conts, proposer.num_steps)
    state_len = pol_pool.prompt.lengths + pol_path.lengths
    outcome = classify_steps(
        valid=proposals.valid, finished=proposals.finished,
        truncated=proposals.truncated,
        state_lengths=state_len[:, None] + proposals.lengths,
        state_width=config.state_width, mode=config.truncated_steps)
    penalty = 0.0
    if config.tool_check is not None and config.tool_weight:
        ok = checked_steps(config.tool_check, proposals.tokens,
                           proposals.lengths)
        penalty = config.tool_weight * (~ok).astype(jnp.float32)
    return Expansion(
        step_tokens=proposals.tokens, step_lengths=proposals.lengths,
        log_probs=proposals.log_probs, valid=outcome.valid,
        terminal=outcome.terminal,
        reward=_critic_scores(models.prm, pools.prm, staged.paths[1],
                              proposals) - penalty,
        q_value=_critic_scores(models.qvm, pools.qvm, staged.paths[2],
                               proposals) - penalty,
        generated_tokens=proposals.generated_tokens,
        truncated=outcome.truncated, overflow=outcome.overflow)


def expand_cached(models, stop: StopRule, config, tree: Tree,
                  node: jax.Array, keys: jax.Array, *,
                  kernel=None) -> Expansion:
    """`ExpandFn` of the cached Q*: `expand_staged` on the staged nodes.

    Args:
      models, stop, config: as for `qstar.expand_nodes`.
      tree: the trees, `extra` a `CachedAStarNodes` staged at `node`.
      node: [B] the nodes A* expands (the staged ones).
      keys: [B].
      kernel: the decode attention kernel (see `tree_decode_attend`).
    """
    del node  # The staged node; see stage_next_node.
    nodes: CachedAStarNodes = tree.extra
    return expand_staged(models, stop, config, nodes.pools, nodes.staged,
                         keys, kernel=kernel)


ATTENTION = ("auto", "jnp", "pallas")


def decode_kernel(attention: str):
    """The decode attention kernel for an `attention` choice (None: the
    pure-jnp reference)."""
    if attention not in ATTENTION:
        raise ValueError(f"attention={attention!r}; use one of {ATTENTION}")
    use = attention == "pallas" or (attention == "auto"
                                    and jax.default_backend() in ("gpu",
                                                                  "tpu"))
    return tree_decode_attention if use else None


def default_path_slots(config, prompt_lengths=None) -> int:
    """W: the longest path (tokens after the prompt) a node can have,
    state_width - (shortest prompt), or state_width - 1 when the prompt
    lengths are not known on the host."""
    if prompt_lengths is None or isinstance(prompt_lengths, jax.core.Tracer):
        return config.state_width - 1
    shortest = int(jnp.min(jnp.asarray(prompt_lengths)))
    return max(config.state_width - shortest, 1)


def init_cached_tree(models, prompt_tokens: jax.Array,
                     prompt_lengths: jax.Array, *, config,
                     path_slots: int,
                     pool_budget_bytes: int = DEFAULT_POOL_BUDGET) -> Tree:
    """A tree of roots whose `extra` holds the pools, staged at the roots.

    Raises:
      PoolTooLargeError: the pools of B trees of `config.search.num_nodes`
        nodes exceed `pool_budget_bytes`.
    """
    n = config.search.num_nodes
    t = config.proposer.max_step_tokens
    b = prompt_tokens.shape[0]
    check_pool_fits([m.config for m in _backbones(models)], batch=b,
                    num_nodes=n, max_step_tokens=t,
                    budget_bytes=pool_budget_bytes)
    tree = init_tree(prompt_tokens, prompt_lengths, num_nodes=n,
                     max_step_tokens=t, max_children=config.proposer.num_steps)
    pools = QStarPools(*(init_model_pool(
        m, tree.prompt_tokens, tree.prompt_lengths, num_nodes=n,
        max_step_tokens=t) for m in _backbones(models)))
    base = astar_nodes(tree)
    nodes = CachedAStarNodes(
        **{f: getattr(base, f) for f in ("g", "h", "f", "status",
                                        "num_free", "block_best",
                                        "block_worst")},
        pools=pools, models=models, config=config, path_slots=path_slots,
        encoded_tokens=jnp.zeros((b,), jnp.int32))
    return tree.replace(extra=stage_next_node(tree.replace(extra=nodes)))


def qstar_cached_search(models, prompt_tokens: jax.Array,
                        prompt_lengths: jax.Array, keys: jax.Array,
                        stop: StopRule, *, config,
                        path_slots: int | None = None,
                        pool_budget_bytes: int = DEFAULT_POOL_BUDGET,
                        attention: str = "auto") -> SearchResult:
    """Q* on B problems from per-node key/value pools (jit, config static).

    Same arguments and result as `qstar.qstar_search` ('edge' heuristic);
    `result.tree.extra` is the `CachedAStarNodes` (pools, encoded tokens).

    Args:
      path_slots: W, dense path slots (static); default
        `default_path_slots(config, prompt_lengths)`. A node whose path is
        longer than W would be cut, so W must be at least state_width minus
        the shortest prompt.
      pool_budget_bytes: memory the pools may take (checked on the host).
      attention: decode attention: 'jnp' (the reference), 'pallas' (the
        `kernels.tree_decode` kernel; interpreted on CPU, slow) or 'auto'
        (the kernel on GPU and TPU, 'jnp' elsewhere).

    Raises:
      ValueError: a 'lookahead' heuristic (use the re-encoding path), or a
        `path_slots` below state_width minus the shortest prompt (checked
        when the prompt lengths are concrete).
      PoolTooLargeError: see `init_cached_tree`.
    """
    if config.search.heuristic != "edge":
        raise ValueError(
            "qstar_cached_search supports heuristic='edge' only, got "
            f"{config.search.heuristic!r}; use qstar_search (re-encoding) "
            "for 'lookahead'")
    check_prompts("qstar_cached_search", prompt_tokens, prompt_lengths, keys,
                  config.state_width)
    needed = default_path_slots(config, prompt_lengths)
    if path_slots is None:
        path_slots = needed
    elif not isinstance(prompt_lengths, jax.core.Tracer) and \
            path_slots < needed:
        raise ValueError(
            f"qstar_cached_search: path_slots = {path_slots} but a path "
            f"can reach state_width - shortest prompt = {needed} tokens")
    tree = init_cached_tree(models, prompt_tokens, prompt_lengths,
                            config=config, path_slots=path_slots,
                            pool_budget_bytes=pool_budget_bytes)
    expand = functools.partial(expand_cached, models, stop, config,
                               kernel=decode_kernel(attention))
    return astar_search(expand, tree, keys, config=config.search)
