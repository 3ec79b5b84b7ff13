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
`selection_block(N)` (about sqrt(N)) slots, and `AStarNodes` keeps, per
block, the best and the worst f among its OPEN slots (`block_best`,
`block_worst`). `best_open_node` reads the [B, N / block] block maxima and
scans one block instead of all N slots; `recycle` ranks the slots of the
K blocks with the lowest minima instead of all N. Both give exactly the
answer of a full scan as long as the block values are exact, which every
function here that changes status or f keeps (`add_children`, which also
rescans its parent's block, so a pop by hand followed by `add_children` is
fine; `set_scores`; `recycle`). Other code that changes status or f by hand
must call `refresh_selection` afterwards.

XLA on CPU copies a [B, N] buffer every iteration when a `lax.cond` (or an
inner loop) reads it and the iteration later updates it in place, or when
a read that the update does not depend on could run after it. So the hot
path ranks recycling victims in conds over the candidate blocks' slots
only, never over the [B, N] arrays, and orders such reads before the
writes with `lax.optimization_barrier` (measured: no [B, N] copy is left
in the loop body of `astar_search` at N = 4096).
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
      block_best: [B, N / selection_block(N)] float32 the best f of the
        OPEN slots of each block (-inf: none), or None (no cache:
        `best_open_node` and `recycle` scan every slot).
      block_worst: [B, N / selection_block(N)] float32 the worst f of the
        OPEN slots of each block (+inf: none), or None (as block_best).
    """

    g: jax.Array
    h: jax.Array
    f: jax.Array
    status: jax.Array
    num_free: jax.Array
    block_best: jax.Array | None = None
    block_worst: jax.Array | None = None

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
    block_worst = jnp.full((b, num_blocks), jnp.inf,
                           jnp.float32).at[:, 0].set(0.0)
    return AStarNodes(g=zeros, h=zeros, f=zeros, status=status,
                      num_free=jnp.full((b,), n - 1, jnp.int32),
                      block_best=block_best, block_worst=block_worst)


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


def _block_slots(nodes: AStarNodes, blocks: jax.Array,
                 block: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The slots of blocks [B, J] (entries in [0, N / block)).

    Each block is read as one contiguous slice (a gather of whole rows of
    `block` slots, several times faster on CPU than one index per slot);
    the last, partial block's slice starts early and its slots of the
    previous block are masked.

    Returns:
      ids [B, J, S] int32, open_ [B, J, S] bool (an OPEN slot of that
      block) and f [B, J, S] float32, S = min(block, N).
    """
    n = nodes.status.shape[1]
    size = min(block, n)
    start = jnp.minimum(blocks * block, n - size).astype(jnp.int32)
    ids = start[..., None] + jnp.arange(size, dtype=jnp.int32)

    def read(x):
        one = lambda row, s: jax.lax.dynamic_slice(row, (s,), (size,))
        return jax.vmap(jax.vmap(one, (None, 0)))(x, start)

    open_ = (read(nodes.status) == OPEN) & (ids // block
                                            == blocks[..., None])
    return ids, open_, read(nodes.f)


def refresh_selection(nodes: AStarNodes,
                      blocks: jax.Array | None = None) -> AStarNodes:
    """`nodes` with exact `block_best` and `block_worst` for given blocks.

    Args:
      nodes: A*'s per-node arrays.
      blocks: [B, J] int32 block indices to recompute (entries outside
        [0, N / block) are skipped), or None: every block (O(N) per row).
    """
    b, n = nodes.status.shape
    block = selection_block(n)
    num_blocks = -(-n // block)
    if blocks is None or nodes.block_best is None:
        open_ = jnp.pad(nodes.status == OPEN, ((0, 0), (0, num_blocks * block
                                                          - n)))
        f = jnp.pad(nodes.f, ((0, 0), (0, num_blocks * block - n)))
        open_ = open_.reshape(b, num_blocks, block)
        f = f.reshape(b, num_blocks, block)
        return nodes.replace(
            block_best=jnp.max(jnp.where(open_, f, -jnp.inf), axis=2),
            block_worst=jnp.min(jnp.where(open_, f, jnp.inf), axis=2))
    ok = (blocks >= 0) & (blocks < num_blocks)
    _, open_, f = _block_slots(nodes, jnp.where(ok, blocks, 0), block)
    best = jnp.max(jnp.where(open_, f, -jnp.inf), axis=2)
    worst = jnp.min(jnp.where(open_, f, jnp.inf), axis=2)
    # Orders these reads before later in-place writes of status and f.
    nodes, best, worst = jax.lax.optimization_barrier((nodes, best, worst))
    rows = jnp.arange(b)[:, None]
    at = (rows, jnp.where(ok, blocks, num_blocks))
    return nodes.replace(
        block_best=nodes.block_best.at[at].set(best, mode="drop"),
        block_worst=nodes.block_worst.at[at].set(worst, mode="drop"))


def refresh_slots(nodes: AStarNodes, slots: jax.Array) -> AStarNodes:
    """Exact block values for the blocks of slots [B, K] (-1 skipped)."""
    if nodes.block_best is None:
        return nodes
    block = selection_block(nodes.status.shape[1])
    return refresh_selection(nodes, jnp.where(slots >= 0, slots // block,
                                              -1))


def _open_in_blocks(nodes: AStarNodes, slots: jax.Array,
                    f: jax.Array) -> AStarNodes:
    """Block values after slots [B, K] (-1 skipped) became OPEN with
    priorities f [B, K] (a max/min scatter, no rescan)."""
    if nodes.block_best is None:
        return nodes
    block = selection_block(nodes.status.shape[1])
    num_blocks = nodes.block_best.shape[1]
    at = (jnp.arange(slots.shape[0])[:, None],
          jnp.where(slots >= 0, slots // block, num_blocks))
    return nodes.replace(
        block_best=nodes.block_best.at[at].max(f, mode="drop"),
        block_worst=nodes.block_worst.at[at].min(f, mode="drop"))


def best_open_node(tree: Tree, block: int | None = None) -> jax.Array:
    """[B] int32 the OPEN slot with the largest f, ties to the lowest index.

    With the selection cache (`AStarNodes.block_best`, `block` None): the
    lowest-index block of the largest block maximum is scanned for its
    lowest-index slot of that f, O(N / block + block) per row, the answer
    of a full scan while the cache is exact (see the module docstring).

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
    """`best_open_node` through the block maxima (see there)."""
    return _best_in_top_block(nodes, nodes.block_best,
                              selection_block(nodes.status.shape[1]))


def _scanned_best(nodes: AStarNodes, block: int) -> jax.Array:
    """`best_open_node` by a full blocked scan of [B, N]."""
    b, n = nodes.status.shape
    block = min(block, n)
    num_blocks = -(-n // block)
    score = jnp.where(nodes.status == OPEN, nodes.f, -jnp.inf)
    score = jnp.pad(score, ((0, 0), (0, num_blocks * block - n)),
                    constant_values=-jnp.inf)
    block_best = jnp.max(score.reshape(b, num_blocks, block), axis=2)
    return _best_in_top_block(nodes, block_best, block)


def _best_in_top_block(nodes: AStarNodes, block_best: jax.Array,
                       block: int) -> jax.Array:
    """[B] int32 the lowest-index OPEN slot whose f is the row's largest
    value of block_best [B, N / block] (each block's best OPEN f), read in
    the lowest-index block holding it; N - 1 (not OPEN) in a row without
    OPEN slots."""
    n = nodes.status.shape[1]
    first, best = _first_max(block_best)
    ids, open_, f = _block_slots(nodes, first[:, None], block)
    hit = open_[:, 0] & (f[:, 0] == best[:, None])              # [B, S]
    return jnp.minimum(jnp.min(jnp.where(hit, ids[:, 0], n), axis=1), n - 1)


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
    in its parent's `children_index` is cleared. With the selection cache
    only the slots of the v blocks with the lowest minima are ranked;
    without it, all N slots, and only when some row is short of slots.

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
    n = nodes.status.shape[1]
    v = min(max_victims, n)
    deficit = jnp.maximum(need - nodes.num_free, 0)
    if nodes.block_worst is None:
        target = jax.lax.cond(
            jnp.any(deficit > 0),
            lambda: _ranked_victims(nodes, deficit, v),
            lambda: jnp.full((tree.batch_size, v), n, jnp.int32))
        return _free(tree, target, reset_fields)
    target, blocks, best, worst = _cached_victims(nodes, deficit, v)
    tree, freed = _free(tree, target, reset_fields)
    # The candidate blocks' exact values without the victims (the blocks
    # hold every victim; entries num_blocks are skipped).
    nodes = tree.extra
    rows = jnp.arange(tree.batch_size)[:, None]
    return tree.replace(extra=nodes.replace(
        block_best=nodes.block_best.at[rows, blocks].set(best, mode="drop"),
        block_worst=nodes.block_worst.at[rows, blocks].set(
            worst, mode="drop"))), freed


def _first_max(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The lowest index [B] int32 of each row's maximum of x [B, M], and
    that maximum [B] (on CPU several times faster than `jnp.argmax`, a
    (value, index) reduction)."""
    best = jnp.max(x, axis=1)
    m = x.shape[1]
    first = jnp.min(jnp.where(x == best[:, None], jnp.arange(m), m - 1),
                    axis=1)
    return first.astype(jnp.int32), best


def _pick_victims(ids: jax.Array, open_: jax.Array, f: jax.Array,
                  deficit: jax.Array, v: int, n: int) -> jax.Array:
    """The `recycle` victims among candidate slots ids [B, M] in decreasing
    index order (open_, f: [B, M]): the `deficit` [B] lowest-f OPEN ones,
    ties to the highest index (top_k's tie rule: the earlier position).
    Returns [B, v] int32 slots, N where none."""
    score = jnp.where(open_, -f, -jnp.inf)
    pos = jax.lax.top_k(score, v)[1]
    take = ((jnp.arange(v) < deficit[:, None])
            & jnp.take_along_axis(open_, pos, axis=1))
    return jnp.where(take, jnp.take_along_axis(ids, pos, axis=1),
                     n).astype(jnp.int32)


def _ranked_victims(nodes: AStarNodes, deficit: jax.Array,
                    v: int) -> jax.Array:
    """`recycle`'s victims by ranking all N slots (no selection cache)."""
    b, n = nodes.status.shape
    ids = jnp.broadcast_to(jnp.arange(n - 1, -1, -1, dtype=jnp.int32),
                           (b, n))
    return _pick_victims(ids, (nodes.status == OPEN)[:, ::-1],
                         nodes.f[:, ::-1], deficit, v, n)


def _cached_victims(nodes: AStarNodes, deficit: jax.Array, v: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """`recycle`'s victims from the slots of the v blocks with the lowest
    block minima (ties to the higher block), O(N / block + v * block) per
    row. Exact: a slot among the v lowest (by f, then highest index) lies
    in a block whose minimum precedes it, and fewer than v blocks can.

    Returns:
      target [B, v] int32 the victims (N: none); blocks [B, j] int32 the
      candidate blocks (num_blocks when no row is short) and best, worst
      [B, j] float32 their exact block values once the victims are freed.
    """
    b, n = nodes.status.shape
    block = selection_block(n)
    num_blocks = nodes.block_worst.shape[1]
    j = min(v, num_blocks)
    short = jnp.any(deficit > 0)
    # top_k costs tens of microseconds on CPU: both rankings run only when
    # some row is short, each in a cond over small operands (see the module
    # docstring); the [B, j, block] read between them is cheap.

    def lowest_blocks(worst):
        low = jax.lax.top_k(-worst[:, ::-1], j)[1]
        return num_blocks - 1 - jnp.sort(low, axis=1)   # Decreasing order.

    blocks = jax.lax.cond(short, lowest_blocks,
                          lambda w: jnp.zeros((b, j), jnp.int32),
                          nodes.block_worst)
    ids, open_, f = _block_slots(nodes, blocks, block)          # [B, j, S]

    def pick(blocks, ids, open_, f):
        # Candidates in decreasing slot order: top_k's tie rule (the earlier
        # position) then frees the highest index among equal f.
        flat = lambda x: x[..., ::-1].reshape(b, -1)
        target = _pick_victims(flat(ids), flat(open_), flat(f), deficit, v,
                               n)
        freed = jnp.any(ids[..., None] == target[:, None, None, :], axis=-1)
        left = open_ & ~freed
        return (target, blocks,
                jnp.max(jnp.where(left, f, -jnp.inf), axis=2),
                jnp.min(jnp.where(left, f, jnp.inf), axis=2))

    def none(blocks, ids, open_, f):
        del ids, open_, f
        inf = jnp.full(blocks.shape, jnp.inf, jnp.float32)
        return (jnp.full((b, v), n, jnp.int32), blocks + num_blocks, -inf,
                inf)

    return jax.lax.cond(short, pick, none, blocks, ids, open_, f)


def _free(tree: Tree, target: jax.Array,
          reset_fields: bool) -> tuple[Tree, jax.Array]:
    """Frees the slots `target` [B, v] (entries N skipped; see `recycle`)."""
    n = tree.capacity
    freed = jnp.sum(target < n, axis=1, dtype=jnp.int32)
    rows = jnp.arange(tree.batch_size)[:, None]
    parent = jnp.where(target < n, node_values(tree.parent, target), n)
    edge = node_values(tree.action_from_parent, target)
    # Orders these reads before the in-place writes below and after.
    tree, parent, edge = jax.lax.optimization_barrier((tree, parent, edge))
    nodes: AStarNodes = tree.extra
    children = tree.children_index.at[rows, parent, edge].set(
        Tree.NO_CHILD, mode="drop")
    nodes = nodes.replace(
        num_free=nodes.num_free + freed,
        **{name: put_values(getattr(nodes, name), target, value)
           for name, value in _ASTAR_FREE.items()})
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
    # The parent's block is rescanned (it was popped, closed, since the last
    # refresh); the new OPEN children only raise their blocks' maxima and
    # lower their minima.
    nodes = _open_in_blocks(refresh_slots(nodes, parent[:, :1]), child, f)
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
    return tree.replace(extra=refresh_slots(state, nodes))
