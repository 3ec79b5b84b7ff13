"""Search trees as preallocated arrays: B problems of N node slots each.

Slot 0 of each row is the root (the prompt); every other slot is FREE
(unused), OPEN (created, waiting to be popped: always a leaf) or CLOSED
(popped; expanded unless terminal). A node's state is the prompt followed by
the steps along its path; only the step into each node is stored. All
functions are pure, batched over B and jit-compatible (except the host
helper `trajectory_steps`); none loops over nodes in Python.

Slot allocation is deterministic: the valid children of a row, in proposal
order k = 0..K-1, take its FREE slots in increasing index order, which are
`num_nodes, num_nodes + 1, ...` (creation order) until `recycle` frees OPEN
nodes (lowest f first, ties to the highest index) for reuse.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.search.interfaces import Expansion

FREE = 0
OPEN = 1
CLOSED = 2

_I32, _F32 = jnp.int32, jnp.float32
_FREE_VALUES = dict(
    parent=(-1, _I32), depth=(0, _I32), step_tokens=(0, _I32),
    step_lengths=(0, _I32), step_log_prob=(0, _F32), reward=(0, _F32),
    g=(0, _F32), h=(0, _F32), f=(0, _F32), status=(FREE, _I32),
    terminal=(False, bool))
"""(value, dtype) of every per-node field in a FREE slot."""


@flax.struct.dataclass
class Tree:
    """B search trees of N node slots, with steps of at most T tokens.

    Attributes:
      prompt_tokens: [B, P0] int32 root states (the prompts), right-padded.
      prompt_lengths: [B] int32 real tokens of each prompt.
      parent: [B, N] int32 parent slot; NO_PARENT (-1) for the root and for
        FREE slots.
      depth: [B, N] int32 steps from the root (root: 0).
      step_tokens: [B, N, T] int32 the step that leads into the node (the
        root has none), padded with 0 after `step_lengths`.
      step_lengths: [B, N] int32 real tokens of the step (root: 0).
      step_log_prob: [B, N] float32 policy log-probability of the step.
      reward: [B, N] float32 process reward R_P of the step into the node
        (a non-finite model output is stored as the worst score).
      g: [B, N] float32 aggregated process reward along the path.
      h: [B, N] float32 heuristic (estimated future value).
      f: [B, N] float32 priority g + lambda * h (larger is popped first).
      status: [B, N] int32 FREE, OPEN or CLOSED.
      terminal: [B, N] bool the node's state is a complete solution.
      num_nodes: [B] int32 slots ever used (a high-water mark; node 0 is the
        root, so at least 1). Slots >= num_nodes are FREE.
      num_free: [B] int32 FREE slots: N - num_nodes plus recycled slots not
        yet reused (kept in step with `status` by the functions here).
    """

    prompt_tokens: jax.Array
    prompt_lengths: jax.Array
    parent: jax.Array
    depth: jax.Array
    step_tokens: jax.Array
    step_lengths: jax.Array
    step_log_prob: jax.Array
    reward: jax.Array
    g: jax.Array
    h: jax.Array
    f: jax.Array
    status: jax.Array
    terminal: jax.Array
    num_nodes: jax.Array
    num_free: jax.Array

    ROOT: ClassVar[int] = 0
    NO_PARENT: ClassVar[int] = -1

    @property
    def batch_size(self) -> int:
        """B, the number of problems."""
        return self.status.shape[0]

    @property
    def capacity(self) -> int:
        """N, the node slots per problem."""
        return self.status.shape[1]


class StateTokens(NamedTuple):
    """Full token states (prompt followed by the steps of a path).

    Attributes:
      tokens: [B, P] int32 right-padded with `pad_id`.
      lengths: [B] int32 real tokens, clipped to P.
      overflow: [B] bool the state had more than P tokens; its tail is cut.
    """

    tokens: jax.Array
    lengths: jax.Array
    overflow: jax.Array


def init_tree(prompt_tokens: jax.Array, prompt_lengths: jax.Array, *,
              num_nodes: int, max_step_tokens: int) -> Tree:
    """A tree per problem holding only its OPEN root.

    Args:
      prompt_tokens: [B, P0] int32 right-padded prompts.
      prompt_lengths: [B] int32 real tokens of each prompt.
      num_nodes: N, slots per problem (root included), >= 1.
      max_step_tokens: T, the longest step in tokens, >= 1.

    Returns:
      A `Tree` with the root (g = h = f = 0) OPEN and all other slots FREE.
    """
    if num_nodes < 1 or max_step_tokens < 1:
        raise ValueError("num_nodes and max_step_tokens must be >= 1")
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    b = prompt_tokens.shape[0]
    fields = {name: jnp.full((b, num_nodes), value, dtype)
              for name, (value, dtype) in _FREE_VALUES.items()}
    fields["step_tokens"] = jnp.zeros((b, num_nodes, max_step_tokens), _I32)
    fields["status"] = fields["status"].at[:, Tree.ROOT].set(OPEN)
    return Tree(
        prompt_tokens=prompt_tokens,
        prompt_lengths=jnp.asarray(prompt_lengths, jnp.int32),
        num_nodes=jnp.ones((b,), jnp.int32),
        num_free=jnp.full((b,), num_nodes - 1, jnp.int32), **fields)


def node_values(x: jax.Array, nodes: jax.Array) -> jax.Array:
    """Per-node values of given slots: x[b, nodes[b, ...]].

    Args:
      x: [B, N, ...] a per-node tree field.
      nodes: [B] or [B, K] slot indices; negative entries read slot 0.

    Returns:
      [B, ...] or [B, K, ...] the values.
    """
    rows = jnp.arange(x.shape[0]).reshape((-1,) + (1,) * (nodes.ndim - 1))
    return x[rows, jnp.maximum(nodes, 0)]


def path_nodes(tree: Tree, node: jax.Array, max_depth: int) -> jax.Array:
    """The slots along each row's path, root first.

    Args:
      tree: the trees.
      node: [B] int32 slots (-1: no node, gives an all -1 path).
      max_depth: D, the deepest path represented.

    Returns:
      [B, D + 1] int32 slots root, ..., node, padded with -1 at the end. A
      node deeper than D gets its last D + 1 path nodes (the root is missing).
    """
    def body(carry):
        j, anc, cur = carry
        parent = jnp.where(cur >= 0, node_values(tree.parent, cur), -1)
        return j + 1, anc.at[:, j].set(cur), parent

    anc = jnp.full((tree.batch_size, max_depth + 1), -1, jnp.int32)
    _, anc, _ = jax.lax.while_loop(
        lambda c: (c[0] <= max_depth) & jnp.any(c[2] >= 0), body,
        (jnp.int32(0), anc, node.astype(jnp.int32)))
    count = jnp.sum(anc >= 0, axis=1)                     # [B]
    src = count[:, None] - 1 - jnp.arange(max_depth + 1)  # [B, D + 1]
    path = jnp.take_along_axis(anc, jnp.maximum(src, 0), axis=1)
    return jnp.where(src >= 0, path, -1)


def state_tokens(tree: Tree, node: jax.Array, width: int, *,
                 max_depth: int | None = None, pad_id: int = 0) -> StateTokens:
    """Each row's state at `node`: the prompt followed by the path's steps.

    Built on device with fixed shapes: the path is gathered (a loop over depth)
    and every step's tokens are scattered to their offsets.

    Args:
      tree: the trees.
      node: [B] int32 slots (-1: the prompt alone).
      width: P, the width of the returned token array.
      max_depth: the deepest path to follow; None: N - 1 (always enough).
      pad_id: filler after each state.

    Returns:
      `StateTokens`: tokens [B, P], lengths [B] (clipped to P) and overflow
      [B] (the state is longer than P and was cut at P tokens).
    """
    b, n, t = tree.step_tokens.shape
    depth = n - 1 if max_depth is None else max_depth
    path = path_nodes(tree, node, depth)                          # [B, D+1]
    lengths = jnp.where(path >= 0, node_values(tree.step_lengths, path), 0)
    offsets = jnp.cumsum(lengths, axis=1) - lengths               # exclusive
    total = tree.prompt_lengths + jnp.sum(lengths, axis=1)

    keep = min(tree.prompt_tokens.shape[1], width)
    prompt = jnp.where(jnp.arange(keep) < tree.prompt_lengths[:, None],
                       tree.prompt_tokens[:, :keep], pad_id)
    out = jnp.full((b, width), pad_id, jnp.int32).at[:, :keep].set(prompt)

    steps = node_values(tree.step_tokens, path)                   # [B,D+1,T]
    tpos = jnp.arange(t)
    target = (tree.prompt_lengths[:, None, None] + offsets[:, :, None]
              + tpos)
    mask = ((path >= 0)[:, :, None] & (tpos < lengths[:, :, None])
            & (target < width))
    target = jnp.where(mask, target, width)                       # dropped
    out = out.at[jnp.arange(b)[:, None, None], target].set(steps,
                                                            mode="drop")
    return StateTokens(tokens=out, lengths=jnp.minimum(total, width),
                       overflow=total > width)


def best_open_node(tree: Tree, block: int = 128) -> jax.Array:
    """[B] int32 the OPEN slot with the largest f, ties to the lowest index.

    One pass over [B, N] computes the best f of every block of `block`
    slots; the lowest-index block holding the row's best f is then scanned
    for its lowest matching slot. On CPU this is several times faster than
    `jnp.argmax` (a (value, index) reduction). A row without OPEN nodes gets
    some non-OPEN slot.
    """
    b, n = tree.status.shape
    block = min(block, n)
    num_blocks = -(-n // block)
    score = jnp.where(tree.status == OPEN, tree.f, -jnp.inf)
    score = jnp.pad(score, ((0, 0), (0, num_blocks * block - n)),
                    constant_values=-jnp.inf)
    block_best = jnp.max(score.reshape(b, num_blocks, block), axis=2)
    best = jnp.max(block_best, axis=1, keepdims=True)             # [B, 1]
    first = jnp.min(jnp.where(block_best == best, jnp.arange(num_blocks),
                              num_blocks - 1), axis=1)
    ids = first[:, None] * block + jnp.arange(block)              # [B, blk]
    hit = ((ids < n) & (node_values(tree.status, jnp.minimum(ids, n - 1))
                        == OPEN) & (node_values(tree.f, ids) == best))
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
    n = tree.capacity

    def compact():
        return tree.num_nodes[:, None] + jnp.arange(count, dtype=jnp.int32)

    def scattered():
        ids = jnp.arange(n, dtype=jnp.float32)
        score = jnp.where(tree.status == FREE, -ids, -jnp.inf)
        return jax.lax.top_k(score, count)[1].astype(jnp.int32)

    has_holes = jnp.any(tree.num_free != n - tree.num_nodes)
    return jax.lax.cond(has_holes, scattered, compact)


def recycle(tree: Tree, need: jax.Array, *, max_victims: int,
            reset_fields: bool = True) -> tuple[Tree, jax.Array]:
    """Frees OPEN nodes so that each row has at least `need` FREE slots.

    A row with fewer FREE slots than `need` frees its lowest-f OPEN nodes,
    ties to the highest slot index (the most recently created first, while
    nothing has been recycled), at most `max_victims` and at most as many as it
    has OPEN nodes. OPEN nodes are leaves (only popped nodes get children),
    so freeing one never orphans a node; CLOSED nodes (ancestors of every
    OPEN node and every found trajectory) are never freed. The [B, N]
    ranking runs only when some row is short of slots.

    Args:
      tree: the trees.
      need: [B] int32 slots wanted per row.
      max_victims: static bound on the nodes freed per row (<= N).
      reset_fields: also reset the freed slots' other fields (False: only
        status and num_free change, for callers that refill every freed
        slot at once).

    Returns:
      The tree with the victims FREE, and freed [B] int32.
    """
    b, n = tree.status.shape
    v = min(max_victims, n)
    deficit = jnp.maximum(need - tree.num_free, 0)

    def pick():
        # Reversed so that top_k's tie rule (lower index first) picks the
        # highest original index among equal f.
        score = jnp.where(tree.status == OPEN, -tree.f, -jnp.inf)[:, ::-1]
        victims = (n - 1 - jax.lax.top_k(score, v)[1]).astype(jnp.int32)
        take = ((jnp.arange(v) < deficit[:, None])
                & (node_values(tree.status, victims) == OPEN))
        return jnp.where(take, victims, n)

    target = jax.lax.cond(jnp.any(deficit > 0), pick,
                          lambda: jnp.full((b, v), n, jnp.int32))
    freed = jnp.sum(target < n, axis=1, dtype=jnp.int32)
    names = list(_FREE_VALUES) if reset_fields else ["status"]
    tree = tree.replace(
        num_free=tree.num_free + freed,
        **{name: _put(getattr(tree, name), target, _FREE_VALUES[name][0])
           for name in names})
    return tree, freed


def _put(x: jax.Array, target: jax.Array, value) -> jax.Array:
    """x[b, target[b, k]] = value[b, k] ([B, K]; targets >= N are dropped)."""
    value = jnp.broadcast_to(jnp.asarray(value, x.dtype),
                             target.shape + x.shape[2:])
    rows = jnp.arange(x.shape[0])[:, None]
    return x.at[rows, target].set(value, mode="drop")


def add_children(tree: Tree, parent: jax.Array, expansion: Expansion,
                 g: jax.Array, h: jax.Array, f: jax.Array,
                 insert_mask: jax.Array) -> tuple[Tree, jax.Array]:
    """Inserts the valid children of each masked row's `parent` as OPEN nodes.

    Children are taken in proposal order k = 0..K-1 and placed in the row's
    FREE slots in increasing index order (so, without recycling, at
    num_nodes, num_nodes + 1, ...). Children beyond the row's FREE slots are
    dropped (child index -1); call `recycle` first to make room.

    Args:
      tree: the trees.
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
    n = tree.capacity
    valid = expansion.valid.astype(bool) & insert_mask[:, None]
    slots = free_slots(tree, min(valid.shape[1], n))
    rank = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1         # [B, K]
    fits = (valid & (rank < tree.num_free[:, None])
            & (rank < slots.shape[1]))
    slot = jnp.take_along_axis(slots, jnp.clip(rank, 0, slots.shape[1] - 1),
                               axis=1)
    target = jnp.where(fits, slot, n)
    parent = parent.astype(jnp.int32)[:, None]
    new = dict(
        parent=parent, depth=node_values(tree.depth, parent) + 1,
        step_tokens=expansion.step_tokens, step_lengths=expansion.step_lengths,
        step_log_prob=expansion.log_probs, reward=expansion.reward, g=g, h=h,
        f=f, status=OPEN, terminal=expansion.terminal)
    tree = tree.replace(
        **{name: _put(getattr(tree, name), target, value)
           for name, value in new.items()},
        num_nodes=jnp.maximum(tree.num_nodes,
                              jnp.max(jnp.where(fits, slot + 1, 0), axis=1)),
        num_free=tree.num_free - jnp.sum(fits, axis=1, dtype=jnp.int32))
    return tree, jnp.where(fits, slot, -1)


def set_scores(tree: Tree, nodes: jax.Array, h: jax.Array,
               f: jax.Array) -> Tree:
    """Overwrites h and f of the given slots.

    Args:
      tree: the trees.
      nodes: [B, K] int32 slots (-1 entries are skipped).
      h: [B, K] float32 new heuristics; f: [B, K] float32 new priorities.
    """
    target = jnp.where(nodes >= 0, nodes, tree.capacity)
    return tree.replace(h=_put(tree.h, target, h), f=_put(tree.f, target, f))


def trajectory_steps(tree: Tree, b: int, node: int) -> list[list[int]]:
    """Host helper: the step token lists along row b's path to `node`.

    Args:
      tree: the trees (device or host arrays).
      b: the row.
      node: a slot of that row (the root or -1 give no steps).

    Returns:
      One token list per step, root's child first.
    """
    parent, tokens, lengths = (np.asarray(x[b]) for x in (
        tree.parent, tree.step_tokens, tree.step_lengths))
    steps, node = [], int(node)
    while node > Tree.ROOT:
        steps.append(tokens[node, :lengths[node]].tolist())
        node = int(parent[node])
    return steps[::-1]
