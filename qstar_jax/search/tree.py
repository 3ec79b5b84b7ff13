"""Search trees as preallocated arrays: B problems of N node slots each.

One `Tree` serves every tree search of the library (A*, eta-MCTS): the
topology (`parent`, `action_from_parent`, `children_index`, `depth`), the
step into each node (tokens, lengths), the edge priors, the reward of the
step into a node, terminal flags, visit counts and value sums, and a slot
`extra` for the arrays that only one method uses (A*'s g/h/f and open list
live in `astar_tree.AStarNodes`, MCTS's raw values in `mcts_types.MCTSNodes`).

Slot 0 of each row is the root (the prompt). A node's state is the prompt
followed by the steps along its path; only the step into each node is
stored. Edge c of node x (its c-th action, 0 <= c < C) leads to slot
`children_index[b, x, c]` (NO_CHILD = -1: not created). Every function here
is pure, batched over B and jit-compatible (except the host helper
`trajectory_steps`); none loops over nodes in Python. This module imports
nothing from the package.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

_I32, _F32 = jnp.int32, jnp.float32

EMPTY_NODE = dict(
    parent=(-1, _I32), action_from_parent=(-1, _I32), depth=(0, _I32),
    step_tokens=(0, _I32), step_lengths=(0, _I32), reward=(0, _F32),
    terminal=(False, bool), visit_count=(0, _I32), value_sum=(0, _F32))
"""(value, dtype) of every per-node field of an unused slot."""


@flax.struct.dataclass
class Tree:
    """B search trees of N node slots, C edges per node, steps of <= T tokens.

    Attributes:
      prompt_tokens: [B, P0] int32 root states (the prompts), right-padded.
      prompt_lengths: [B] int32 real tokens of each prompt.
      parent: [B, N] int32 parent slot; NO_PARENT (-1) for the root and for
        unused slots.
      action_from_parent: [B, N] int32 the edge c of the parent that leads
        here (-1 for the root and unused slots).
      children_index: [B, N, C] int32 child slot of each edge (NO_CHILD = -1:
        not created).
      children_prior_logits: [B, N, C] float32 policy prior logit of each
        edge (A*: the step's log-probability; -inf: the edge is invalid).
        Meaningful for expanded nodes only.
      depth: [B, N] int32 steps from the root (root: 0).
      step_tokens: [B, N, T] int32 the step that leads into the node (the
        root has none), padded with 0 after `step_lengths`.
      step_lengths: [B, N] int32 real tokens of the step (root: 0).
      reward: [B, N] float32 reward of the step into the node (A*: the
        process reward R_P; MCTS: the transition reward, 0 in the language
        model version).
      terminal: [B, N] bool the node's state is a complete solution.
      visit_count: [B, N] int32 simulations through the node (MCTS; A*
        leaves it 0).
      value_sum: [B, N] float32 sum of the values backed up through the
        node (MCTS: mean value = value_sum / visit_count).
      num_nodes: [B] int32 slots ever used (a high-water mark; node 0 is the
        root, so at least 1).
      extra: a method's own per-node arrays (a pytree of [B, ...] leaves),
        or None.
    """

    prompt_tokens: jax.Array
    prompt_lengths: jax.Array
    parent: jax.Array
    action_from_parent: jax.Array
    children_index: jax.Array
    children_prior_logits: jax.Array
    depth: jax.Array
    step_tokens: jax.Array
    step_lengths: jax.Array
    reward: jax.Array
    terminal: jax.Array
    visit_count: jax.Array
    value_sum: jax.Array
    num_nodes: jax.Array
    extra: Any = None

    ROOT: ClassVar[int] = 0
    NO_PARENT: ClassVar[int] = -1
    NO_CHILD: ClassVar[int] = -1

    @property
    def batch_size(self) -> int:
        """B, the number of problems."""
        return self.parent.shape[0]

    @property
    def capacity(self) -> int:
        """N, the node slots per problem."""
        return self.parent.shape[1]

    @property
    def max_children(self) -> int:
        """C, the edges per node."""
        return self.children_index.shape[2]

    @property
    def max_step_tokens(self) -> int:
        """T, the longest step in tokens."""
        return self.step_tokens.shape[2]


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
              num_nodes: int, max_step_tokens: int, max_children: int,
              extra: Any = None) -> Tree:
    """A tree per problem holding only its root.

    Args:
      prompt_tokens: [B, P0] int32 right-padded prompts.
      prompt_lengths: [B] int32 real tokens of each prompt.
      num_nodes: N, slots per problem (root included), >= 1.
      max_step_tokens: T, the longest step in tokens, >= 1.
      max_children: C, edges per node, >= 1.
      extra: the method's per-node arrays, or None.

    Returns:
      A `Tree` with the root in slot 0 and every other slot unused.
    """
    if min(num_nodes, max_step_tokens, max_children) < 1:
        raise ValueError(
            "init_tree: num_nodes, max_step_tokens and max_children must be "
            f">= 1, got {num_nodes}, {max_step_tokens}, {max_children}")
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    b = prompt_tokens.shape[0]
    fields = {name: jnp.full((b, num_nodes), value, dtype)
              for name, (value, dtype) in EMPTY_NODE.items()}
    fields["step_tokens"] = jnp.zeros((b, num_nodes, max_step_tokens), _I32)
    edges = (b, num_nodes, max_children)
    return Tree(
        prompt_tokens=prompt_tokens,
        prompt_lengths=jnp.asarray(prompt_lengths, jnp.int32),
        children_index=jnp.full(edges, Tree.NO_CHILD, _I32),
        children_prior_logits=jnp.zeros(edges, _F32),
        num_nodes=jnp.ones((b,), jnp.int32), extra=extra, **fields)


def node_values(x: jax.Array, nodes: jax.Array) -> jax.Array:
    """Per-node values of given slots: x[b, nodes[b, ...]].

    Args:
      x: [B, N, ...] a per-node tree field.
      nodes: [B] or [B, K] (any [B, ...]) slot indices; negative entries
        read slot 0.

    Returns:
      [B, ...] or [B, K, ...] the values.
    """
    rows = jnp.arange(x.shape[0]).reshape((-1,) + (1,) * (nodes.ndim - 1))
    return x[rows, jnp.maximum(nodes, 0)]


def put_values(x: jax.Array, nodes: jax.Array, value) -> jax.Array:
    """x with x[b, nodes[b, k]] = value[b, k]; slots outside [0, N) skipped.

    Args:
      x: [B, N, ...] a per-node field.
      nodes: [B, K] int32 slots (negative or >= N: dropped).
      value: broadcastable to [B, K, ...].
    """
    n = x.shape[1]
    target = jnp.where((nodes >= 0) & (nodes < n), nodes, n)
    value = jnp.broadcast_to(jnp.asarray(value, x.dtype),
                             target.shape + x.shape[2:])
    rows = jnp.arange(x.shape[0])[:, None]
    return x.at[rows, target].set(value, mode="drop")


def mean_values(tree: Tree, nodes: jax.Array) -> jax.Array:
    """[B, ...] value_sum / visit_count of slots (0 where never visited)."""
    visits = node_values(tree.visit_count, nodes)
    total = node_values(tree.value_sum, nodes)
    return jnp.where(visits > 0, total / jnp.maximum(visits, 1), 0.0)


def add_nodes(tree: Tree, slots: jax.Array, parent: jax.Array,
              action: jax.Array, step_tokens: jax.Array,
              step_lengths: jax.Array, reward: jax.Array,
              terminal: jax.Array) -> Tree:
    """Creates nodes in the given slots and links them to their parents.

    The caller allocates the slots; entries with a slot outside [0, N) are
    skipped. Visit counts and value sums of the new nodes are reset to 0;
    `num_nodes` becomes the high-water mark of the slots used.

    Args:
      tree: the trees.
      slots: [B, K] int32 the new nodes' slots.
      parent: [B, K] int32 each new node's parent slot.
      action: [B, K] int32 the parent's edge (0 <= action < C).
      step_tokens: [B, K, T] int32 the steps into the new nodes.
      step_lengths: [B, K] int32; reward: [B, K] float32; terminal: [B, K].

    Returns:
      The new tree.
    """
    n = tree.capacity
    ok = (slots >= 0) & (slots < n)
    new = dict(
        parent=parent, action_from_parent=action,
        depth=node_values(tree.depth, parent) + 1, step_tokens=step_tokens,
        step_lengths=step_lengths, reward=reward, terminal=terminal,
        visit_count=0, value_sum=0.0)
    rows = jnp.arange(tree.batch_size)[:, None]
    edge_parent = jnp.where(ok, parent, n)
    children = tree.children_index.at[rows, edge_parent, action].set(
        slots.astype(jnp.int32), mode="drop")
    return tree.replace(
        **{name: put_values(getattr(tree, name), jnp.where(ok, slots, n),
                            value) for name, value in new.items()},
        children_index=children,
        num_nodes=jnp.maximum(tree.num_nodes,
                              jnp.max(jnp.where(ok, slots + 1, 0), axis=1)))


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


def repeat_rows(tree: Tree, k: int) -> Tree:
    """The tree with every row repeated k times ([B * k, ...] leaves), so a
    row-wise helper (`state_tokens`) can serve K nodes per problem."""
    return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), tree)


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
