"""A*'s own per-node state on the shared `Tree`: g/h/f and the open list.

A* keeps `AStarNodes` in `tree.extra`. Every slot is FREE (unused), OPEN
(created, waiting to be popped: always a leaf) or CLOSED (popped; expanded
unless terminal). Slot allocation is deterministic: the valid children of a
row, in proposal order k = 0..K-1, take its FREE slots in increasing index
order, which are `num_nodes, num_nodes + 1, ...` (creation order) until
`recycle` frees OPEN nodes (lowest f first, ties to the highest index) for
reuse. Child k of a node is its edge k (`children_index[b, node, k]`), and
the K proposals' log-probabilities are the node's edge priors.

Selection at large N: the slots of a row are cut into blocks of
`selection_block(N)` (about sqrt(N)) slots, and `AStarNodes.block_best`
keeps, per block, an upper bound of the best f among its OPEN slots (exact
after every function here). `best_open_node` then reads the [B, N / block]
block bounds and scans one block, instead of all N slots, and checks the
block it picked: while that block's exact best is below its bound (a slot
was closed or freed by hand), the bound is lowered to the exact value in a
local copy and the pick repeats, so the answer is always the one of a full
scan. The functions here that open slots or
change f (`add_children`, `set_scores`, `recycle`) keep the bounds exact;
the block of `add_children`'s parent (the node just popped) is refreshed
there. Code that raises an f or opens a slot by hand must call
`refresh_selection` afterwards.
"""

from __future__ import annotations

import math

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
      block_best: [B, N / selection_block(N)] float32 an upper bound of the
        best f of the OPEN slots of each block (-inf: none), or None (no
        cache: `best_open_node` scans every slot).
    """

    g: jax.Array
    h: jax.Array
    f: jax.Array
    status: jax.Array
    num_free: jax.Array
    block_best: jax.Array | None = None

    def after_expand(self, tree: Tree, parent: jax.Array,
                     expansion: Expansion,
                     expanded: jax.Array) -> "AStarNodes":
        """Called by `add_children` once the children of `parent` [B] are in
        (`tree` holds them; `expanded` [B] marks the rows that expanded).
        A subclass can keep per-node data in step with the tree here (the
        cached Q* path stages the next node's key/values); A* itself keeps
        nothing more and returns the nodes unchanged."""
        del tree, parent, expansion, expanded
        return self


def astar_nodes(tree: Tree) -> AStarNodes:
    """A* state of a fresh tree (only the root, which is OPEN)."""
    b, n = tree.parent.shape
    zeros = jnp.zeros((b, n), jnp.float32)
    status = jnp.full((b, n), FREE, jnp.int32).at[:, Tree.ROOT].set(OPEN)
    num_blocks = -(-n // selection_block(n))
    block_best = jnp.full((b, num_blocks), -jnp.inf,
                          jnp.float32).at[:, 0].set(0.0)   # The root.
    return AStarNodes(g=zeros, h=zeros, f=zeros, status=status,
                      num_free=jnp.full((b,), n - 1, jnp.int32),
                      block_best=block_best)


def init_astar_tree(prompt_tokens: jax.Array, prompt_lengths: jax.Array, *,
                    num_nodes: int, max_step_tokens: int,
                    max_children: int) -> Tree:
    """`init_tree` with A*'s state attached: the root OPEN (g = h = f = 0),
    every other slot FREE."""
    tree = init_tree(prompt_tokens, prompt_lengths, num_nodes=num_nodes,
                     max_step_tokens=max_step_tokens,
                     max_children=max_children)
    return tree.replace(extra=astar_nodes(tree))


def selection_block(num_nodes: int) -> int:
    """Slots per block of the selection cache: the power of two nearest
    sqrt(N), at least 8 (N = 4096: 64 blocks of 64)."""
    return max(8, 1 << round(math.log2(max(num_nodes, 1)) / 2))


def _block_scores(nodes: AStarNodes, blocks: jax.Array,
                  block: int) -> jax.Array:
    """[B, J, block] f of the OPEN slots of blocks [B, J] (-inf elsewhere)."""
    n = nodes.status.shape[1]
    ids = blocks[..., None] * block + jnp.arange(block)        # [B, J, blk]
    safe = jnp.minimum(ids, n - 1)
    rows = jnp.arange(ids.shape[0])[:, None, None]
    open_ = (ids < n) & (nodes.status[rows, safe] == OPEN)
    return jnp.where(open_, nodes.f[rows, safe], -jnp.inf)


def refresh_selection(nodes: AStarNodes,
                      blocks: jax.Array | None = None) -> AStarNodes:
    """`nodes` with exact `block_best` for the given blocks.

    Args:
      nodes: A*'s per-node arrays.
      blocks: [B, J] int32 block indices to recompute (entries outside
        [0, N / block) are skipped), or None: every block (O(N) per row).
    """
    b, n = nodes.status.shape
    block = selection_block(n)
    num_blocks = -(-n // block)
    if blocks is None or nodes.block_best is None:
        score = jnp.where(nodes.status == OPEN, nodes.f, -jnp.inf)
        score = jnp.pad(score, ((0, 0), (0, num_blocks * block - n)),
                        constant_values=-jnp.inf)
        return nodes.replace(block_best=jnp.max(
            score.reshape(b, num_blocks, block), axis=2))
    ok = (blocks >= 0) & (blocks < num_blocks)
    best = jnp.max(_block_scores(nodes, jnp.where(ok, blocks, 0), block),
                   axis=2)
    rows = jnp.arange(b)[:, None]
    return nodes.replace(block_best=nodes.block_best.at[
        rows, jnp.where(ok, blocks, num_blocks)].set(best, mode="drop"))


def _refresh_slots(nodes: AStarNodes, slots: jax.Array) -> AStarNodes:
    """Exact `block_best` for the blocks of slots [B, K] (-1 skipped)."""
    if nodes.block_best is None:
        return nodes
    block = selection_block(nodes.status.shape[1])
    return refresh_selection(nodes, jnp.where(slots >= 0, slots // block,
                                              -1))


def best_open_node(tree: Tree, block: int | None = None) -> jax.Array:
    """[B] int32 the OPEN slot with the largest f, ties to the lowest index.

    With the selection cache (`AStarNodes.block_best`, `block` None): the
    lowest-index block of the largest bound is scanned for its best slot,
    O(N / block + block) per row; while its exact best is below the bound,
    the bound is lowered and the pick repeats (so the result never depends
    on the cache being exact, only on it being an upper bound).

    Full scan (no cache, or `block` given): one pass over [B, N] computes
    the best f of every block of `block` (default 128) slots; the
    lowest-index block holding the row's best f is then scanned for its
    lowest matching slot. On CPU this is several times faster than
    `jnp.argmax` (a (value, index) reduction).

    A row without OPEN nodes gets some non-OPEN slot.
    """
    nodes: AStarNodes = tree.extra
    if block is None and nodes.block_best is not None:
        return _cached_best(nodes)
    return _scanned_best(nodes, 128 if block is None else block)


def _cached_best(nodes: AStarNodes) -> jax.Array:
    """`best_open_node` through the block bounds (see there).

    Picks the lowest-index block of the largest bound and scans it; while
    some row's scanned best is below that block's bound (the block went
    stale), the bound is lowered to the exact value in a local copy and the
    pick repeats. Each round makes one more block exact, so the loop ends
    (within N / block rounds), with the answer of a full scan.
    """
    n = nodes.status.shape[1]
    block = selection_block(n)

    def pick(bounds):
        first = jnp.argmax(bounds, axis=1).astype(jnp.int32)
        scores = _block_scores(nodes, first[:, None], block)[:, 0]
        return first, scores, jnp.max(scores, axis=1)

    def stale(carry):
        bounds, first, _, exact = carry
        return jnp.any(exact != jnp.max(bounds, axis=1))

    def lower(carry):
        bounds, first, _, exact = carry
        bounds = bounds.at[jnp.arange(bounds.shape[0]), first].set(
            exact)
        return (bounds,) + pick(bounds)

    bounds = nodes.block_best
    _, first, scores, exact = jax.lax.while_loop(stale, lower,
                                                 (bounds,) + pick(bounds))
    offset = jnp.min(jnp.where(scores == exact[:, None], jnp.arange(block),
                               block), axis=1) % block
    return (first * block + offset).astype(jnp.int32)


def _scanned_best(nodes: AStarNodes, block: int) -> jax.Array:
    """`best_open_node` by a full blocked scan of [B, N]."""
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
      reset_fields: also reset the freed slots' tree fields (False: only
        A*'s fields (status, g, h, f), the parent's edge and num_free
        change, for callers that refill every freed slot at once).

    Returns:
      The tree with the victims FREE, and freed [B] int32.
    """
    nodes: AStarNodes = tree.extra
    deficit = jnp.maximum(need - nodes.num_free, 0)
    # The whole update runs inside the cond and the tree goes through it,
    # so XLA updates the [B, N] arrays in place instead of copying them.
    return jax.lax.cond(
        jnp.any(deficit > 0),
        lambda t: _free_victims(t, deficit, max_victims, reset_fields),
        lambda t: (t, jnp.zeros_like(deficit)), tree)


def _free_victims(tree: Tree, deficit: jax.Array, max_victims: int,
                  reset_fields: bool) -> tuple[Tree, jax.Array]:
    """`recycle` for rows short of `deficit` [B] slots (see there)."""
    nodes: AStarNodes = tree.extra
    n = nodes.status.shape[1]
    v = min(max_victims, n)
    # Reversed so that top_k's tie rule (lower index first) picks the
    # highest original index among equal f.
    score = jnp.where(nodes.status == OPEN, -nodes.f, -jnp.inf)[:, ::-1]
    victims = (n - 1 - jax.lax.top_k(score, v)[1]).astype(jnp.int32)
    take = ((jnp.arange(v) < deficit[:, None])
            & (node_values(nodes.status, victims) == OPEN))
    target = jnp.where(take, victims, n)
    freed = jnp.sum(target < n, axis=1, dtype=jnp.int32)
    rows = jnp.arange(tree.batch_size)[:, None]
    parent = jnp.where(target < n, node_values(tree.parent, target), n)
    children = tree.children_index.at[
        rows, parent, node_values(tree.action_from_parent, target)].set(
            Tree.NO_CHILD, mode="drop")
    # A*'s own fields are always reset (cheap scatters): every array the
    # cond's branch rewrites is updated in place, one it only reads would
    # be copied every iteration.
    a_names = list(_ASTAR_FREE)
    nodes = _refresh_slots(nodes.replace(
        num_free=nodes.num_free + freed,
        **{name: put_values(getattr(nodes, name), target, _ASTAR_FREE[name])
           for name in a_names}), jnp.where(target < n, target, -1))
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
    child = jnp.where(fits, slot, -1)
    # The parent's block: it was popped (closed) since the last refresh.
    nodes = _refresh_slots(nodes, jnp.concatenate([parent[:, :1], child],
                                                  axis=1))
    tree = tree.replace(children_prior_logits=priors, extra=nodes)
    return (tree.replace(extra=nodes.after_expand(
        tree, parent[:, 0], expansion, insert_mask)), child)


def set_scores(tree: Tree, nodes: jax.Array, h: jax.Array,
               f: jax.Array) -> Tree:
    """Overwrites h and f of the given slots.

    Args:
      tree: the trees.
      nodes: [B, K] int32 slots (-1 entries are skipped).
      h: [B, K] float32 new heuristics; f: [B, K] float32 new priorities.
    """
    state: AStarNodes = tree.extra
    state = state.replace(h=put_values(state.h, nodes, h),
                          f=put_values(state.f, nodes, f))
    return tree.replace(extra=_refresh_slots(state, nodes))
