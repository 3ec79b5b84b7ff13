"""A*'s own per-node state on the shared `Tree`: g/h/f and the open list.

A* keeps `AStarNodes` in `tree.extra`. Every slot is FREE (unused), OPEN
(created, waiting to be popped: always a leaf) or CLOSED (popped; expanded
unless terminal). Slot allocation is deterministic: the valid children of a
row, in proposal order k = 0..K-1, take its FREE slots in increasing index
order, which are `num_nodes, num_nodes + 1, ...` (creation order) until
`recycle` frees OPEN nodes (lowest f first, ties to the highest index) for
reuse. Child k of a node is its edge k (`children_index[b, node, k]`), and
the K proposals' log-probabilities are the node's edge priors.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.tree import (EMPTY_NODE, Tree, add_nodes, init_tree,
                                   node_values, put_values)

FREE = 0
OPEN = 1
CLOSED = 2

_ASTAR_FREE = dict(g=0.0, h=0.0, f=0.0, status=FREE)
"""A* field values of a FREE slot."""


@flax.struct.dataclass
class AStarNodes:
    """A*'s per-node arrays (`tree.extra` of an A* tree).

    Attributes:
      g: [B, N] float32 aggregated process reward along the path.
      h: [B, N] float32 heuristic (estimated future value).
      f: [B, N] float32 priority g + lambda * h (larger is popped first).
      status: [B, N] int32 FREE, OPEN or CLOSED.
      num_free: [B] int32 FREE slots: N - num_nodes plus recycled slots not
        yet reused (kept in step with `status` by the functions here).
    """

    g: jax.Array
    h: jax.Array
    f: jax.Array
    status: jax.Array
    num_free: jax.Array


def astar_nodes(tree: Tree) -> AStarNodes:
    """A* state of a fresh tree (only the root, which is OPEN)."""
    b, n = tree.parent.shape
    zeros = jnp.zeros((b, n), jnp.float32)
    status = jnp.full((b, n), FREE, jnp.int32).at[:, Tree.ROOT].set(OPEN)
    return AStarNodes(g=zeros, h=zeros, f=zeros, status=status,
                      num_free=jnp.full((b,), n - 1, jnp.int32))


def init_astar_tree(prompt_tokens: jax.Array, prompt_lengths: jax.Array, *,
                    num_nodes: int, max_step_tokens: int,
                    max_children: int) -> Tree:
    """`init_tree` with A*'s state attached: the root OPEN (g = h = f = 0),
    every other slot FREE."""
    tree = init_tree(prompt_tokens, prompt_lengths, num_nodes=num_nodes,
                     max_step_tokens=max_step_tokens,
                     max_children=max_children)
    return tree.replace(extra=astar_nodes(tree))


def best_open_node(tree: Tree, block: int = 128) -> jax.Array:
    """[B] int32 the OPEN slot with the largest f, ties to the lowest index.

    One pass over [B, N] computes the best f of every block of `block`
    slots; the lowest-index block holding the row's best f is then scanned
    for its lowest matching slot. On CPU this is several times faster than
    `jnp.argmax` (a (value, index) reduction). A row without OPEN nodes gets
    some non-OPEN slot.
    """
    nodes: AStarNodes = tree.extra
    b, n = nodes.status.shape
    block = min(block, n)
    num_blocks = -(-n // block)
    score = jnp.where(nodes.status == OPEN, nodes.f, -jnp.inf)
    score = jnp.pad(score, ((0, 0), (0, num_blocks * block - n)),
                    constant_values=-jnp.inf)
    block_best = jnp.max(score.reshape(b, num_blocks, block), axis=2)
    best = jnp.max(block_best, axis=1, keepdims=True)             # [B, 1]
    first = jnp.min(jnp.where(block_best == best, jnp.arange(num_blocks),
                              num_blocks - 1), axis=1)
    ids = first[:, None] * block + jnp.arange(block)              # [B, blk]
    hit = ((ids < n) & (node_values(nodes.status, jnp.minimum(ids, n - 1))
                        == OPEN) & (node_values(nodes.f, ids) == best))
    offset = jnp.min(jnp.where(hit, jnp.arange(block), block), axis=1)
    return (first * block + offset % block).astype(jnp.int32)


def free_slots(tree: Tree, count: int) -> jax.Array:
    """The `count` lowest-index FREE slots of each row.

    When no row holds recycled slots waiting for reuse (the usual case), the
    FREE slots are num_nodes, num_nodes + 1, ... and no [B, N] pass is needed;
    otherwise they are found with a top-k over the slots.

    Returns:
      slots [B, count] int32 in increasing order; entries at or past the
      row's `num_free` are meaningless.
    """
    nodes: AStarNodes = tree.extra
    n = tree.capacity

    def compact():
        return tree.num_nodes[:, None] + jnp.arange(count, dtype=jnp.int32)

    def scattered():
        ids = jnp.arange(n, dtype=jnp.float32)
        score = jnp.where(nodes.status == FREE, -ids, -jnp.inf)
        return jax.lax.top_k(score, count)[1].astype(jnp.int32)

    has_holes = jnp.any(nodes.num_free != n - tree.num_nodes)
    return jax.lax.cond(has_holes, scattered, compact)


def recycle(tree: Tree, need: jax.Array, *, max_victims: int,
            reset_fields: bool = True) -> tuple[Tree, jax.Array]:
    """Frees OPEN nodes so that each row has at least `need` FREE slots.

    A row with fewer FREE slots than `need` frees its lowest-f OPEN nodes,
    ties to the highest slot index (the most recently created first, while
    nothing has been recycled), at most `max_victims` and at most as many as it
    has OPEN nodes. OPEN nodes are leaves (only popped nodes get children),
    so freeing one never orphans a node; CLOSED nodes (ancestors of every
    OPEN node and every found trajectory) are never freed. A victim's edge
    in its parent's `children_index` is cleared. The [B, N] ranking runs
    only when some row is short of slots.

    Args:
      tree: the trees.
      need: [B] int32 slots wanted per row.
      max_victims: static bound on the nodes freed per row (<= N).
      reset_fields: also reset the freed slots' other fields (False: only
        the status, the parent's edge and num_free change, for callers that
        refill every freed slot at once).

    Returns:
      The tree with the victims FREE, and freed [B] int32.
    """
    nodes: AStarNodes = tree.extra
    b, n = nodes.status.shape
    v = min(max_victims, n)
    deficit = jnp.maximum(need - nodes.num_free, 0)

    def pick():
        # Reversed so that top_k's tie rule (lower index first) picks the
        # highest original index among equal f.
        score = jnp.where(nodes.status == OPEN, -nodes.f, -jnp.inf)[:, ::-1]
        victims = (n - 1 - jax.lax.top_k(score, v)[1]).astype(jnp.int32)
        take = ((jnp.arange(v) < deficit[:, None])
                & (node_values(nodes.status, victims) == OPEN))
        return jnp.where(take, victims, n)

    target = jax.lax.cond(jnp.any(deficit > 0), pick,
                          lambda: jnp.full((b, v), n, jnp.int32))
    freed = jnp.sum(target < n, axis=1, dtype=jnp.int32)
    rows = jnp.arange(b)[:, None]
    parent = jnp.where(target < n, node_values(tree.parent, target), n)
    children = tree.children_index.at[
        rows, parent, node_values(tree.action_from_parent, target)].set(
            Tree.NO_CHILD, mode="drop")
    a_names = list(_ASTAR_FREE) if reset_fields else ["status"]
    nodes = nodes.replace(
        num_free=nodes.num_free + freed,
        **{name: put_values(getattr(nodes, name), target, _ASTAR_FREE[name])
           for name in a_names})
    shared = {name: put_values(getattr(tree, name), target, value)
              for name, (value, _) in EMPTY_NODE.items()} if reset_fields \
        else {}
    return tree.replace(children_index=children, extra=nodes,
                        **shared), freed


def add_children(tree: Tree, parent: jax.Array, expansion: Expansion,
                 g: jax.Array, h: jax.Array, f: jax.Array,
                 insert_mask: jax.Array) -> tuple[Tree, jax.Array]:
    """Inserts the valid children of each masked row's `parent` as OPEN nodes.

    Children are taken in proposal order k = 0..K-1 and placed in the row's
    FREE slots in increasing index order (so, without recycling, at
    num_nodes, num_nodes + 1, ...). Children beyond the row's FREE slots are
    dropped (child index -1); call `recycle` first to make room. Child k is
    edge k of the parent, and the K proposals' log-probabilities become the
    parent's edge priors.

    Args:
      tree: the trees (K <= C edges per node).
      parent: [B] int32 the slot each row expands.
      expansion: the K proposed children per row (`Expansion`, [B, K, ...]);
        its `reward` is stored as given.
      g, h, f: [B, K] float32 aggregated rewards, heuristics and priorities
        of the children.
      insert_mask: [B] bool rows whose children are inserted.

    Returns:
      The new tree and child_index [B, K] int32 (slot of each child, -1 when
      invalid, masked out or dropped).
    """
    nodes: AStarNodes = tree.extra
    n = tree.capacity
    k = expansion.valid.shape[1]
    if k > tree.max_children:
        raise ValueError(
            f"add_children: the expansion has K = {k} children but the tree "
            f"has C = {tree.max_children} edges per node; build the tree "
            f"with max_children >= {k}")
    valid = expansion.valid.astype(bool) & insert_mask[:, None]
    slots = free_slots(tree, min(k, n))
    rank = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1         # [B, K]
    fits = (valid & (rank < nodes.num_free[:, None])
            & (rank < slots.shape[1]))
    slot = jnp.take_along_axis(slots, jnp.clip(rank, 0, slots.shape[1] - 1),
                               axis=1)
    target = jnp.where(fits, slot, n)
    parent = jnp.broadcast_to(parent.astype(jnp.int32)[:, None], (
        parent.shape[0], k))
    tree = add_nodes(
        tree, target, parent, jnp.broadcast_to(jnp.arange(k), parent.shape),
        expansion.step_tokens, expansion.step_lengths, expansion.reward,
        expansion.terminal)
    rows = jnp.arange(tree.batch_size)
    prior_rows = jnp.where(insert_mask, parent[:, 0], n)
    priors = tree.children_prior_logits.at[rows, prior_rows, :k].set(
        expansion.log_probs.astype(jnp.float32), mode="drop")
    new = dict(g=g, h=h, f=f, status=OPEN)
    nodes = nodes.replace(
        **{name: put_values(getattr(nodes, name), target, value)
           for name, value in new.items()},
        num_free=nodes.num_free - jnp.sum(fits, axis=1, dtype=jnp.int32))
    return (tree.replace(children_prior_logits=priors, extra=nodes),
            jnp.where(fits, slot, -1))


def set_scores(tree: Tree, nodes: jax.Array, h: jax.Array,
               f: jax.Array) -> Tree:
    """Overwrites h and f of the given slots.

    Args:
      tree: the trees.
      nodes: [B, K] int32 slots (-1 entries are skipped).
      h: [B, K] float32 new heuristics; f: [B, K] float32 new priorities.
    """
    state: AStarNodes = tree.extra
    return tree.replace(extra=state.replace(
        h=put_values(state.h, nodes, h), f=put_values(state.f, nodes, f)))
