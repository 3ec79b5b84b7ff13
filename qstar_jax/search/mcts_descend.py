"""MCTS selection of one iteration: S descents under virtual loss.

Each simulation descends from the root; at every node it stops with

* REVISIT when the node is a leaf: terminal, at `max_depth`, saturated
  without children ('widening') or without a valid action ('enumerated');
* EXPAND ('widening') while the node has fewer children (created, plus
  reserved by earlier simulations of this iteration) than its allowed
  width n(s), at its lowest free edge not reserved; ('enumerated') when the
  selected action has no child yet;
* COLLISION when every edge it could take is reserved by an earlier
  simulation of the iteration (the simulation is dropped);

and otherwise moves to the child of the edge `select_edge` picks. A
simulation that expands or revisits adds one pending visit to every node of
its path; the later simulations of the iteration see them as virtual loss.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.search.mcts_select import (allowed_width, edge_stats,
                                          select_edge)
from qstar_jax.search.mcts_types import (COLLISION, EXPAND, NONE, REVISIT,
                                         MCTSConfig, MCTSNodes)
from qstar_jax.search.tree import Tree, node_values

_CONTINUE = -1


class Selection(NamedTuple):
    """Where the S simulations of an iteration ended ([B, S] each).

    Attributes:
      kind: NONE, EXPAND, REVISIT or COLLISION.
      node: the node reached (EXPAND: the parent; REVISIT: the leaf).
      edge: EXPAND: the parent's edge the new child takes.
      path: [B, S, D + 1] slots root, ..., node by depth (-1 after).
    """

    kind: jax.Array
    node: jax.Array
    edge: jax.Array
    path: jax.Array


def descend(tree: Tree, running: jax.Array, gumbel: jax.Array,
            config: MCTSConfig, pending: jax.Array | None = None,
            reserved: tuple | None = None
            ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One simulation's selection for every row (see the module docstring).

    Args:
      tree: the trees; running: [B] bool rows that search.
      gumbel: [B, C] the rows' root Gumbel noise.
      config: the settings.
      pending: [B, N] int32 virtual visits of earlier simulations, or None.
      reserved: (kind [B, S], node [B, S], edge [B, S], s) the earlier
        simulations s' < s of the iteration, or None.

    Returns:
      kind [B], node [B], edge [B], path [B, D + 1].
    """
    b, d = tree.batch_size, config.max_depth
    nodes: MCTSNodes = tree.extra
    rows = jnp.arange(b)
    path = jnp.full((b, d + 1), -1, jnp.int32).at[:, 0].set(Tree.ROOT)
    c = tree.max_children

    def body(carry, at_root: bool):
        step, node, path, done, kind, edge = carry
        e = edge_stats(tree, node, pending, config)
        depth = node_values(tree.depth, node)
        leaf = node_values(tree.terminal, node) | (depth >= d)
        if reserved is not None:
            r_kind, r_node, r_edge, s = reserved
            mine = ((r_kind == EXPAND) & (r_node == node[:, None])
                    & (jnp.arange(r_kind.shape[1]) < s))           # [B, S]
            blocked = jnp.any(mine[..., None] & (
                r_edge[..., None] == jnp.arange(c)), axis=1)       # [B, C]
            reserved_new = jnp.sum(mine, axis=1)
        else:
            blocked, reserved_new = None, 0
        exists = e.child >= 0
        if config.expansion == "widening":
            count = jnp.sum(exists, axis=1)
            saturated = node_values(nodes.saturated, node)
            leaf = leaf | (saturated & (count == 0))
            free = ~exists if blocked is None else ~exists & ~blocked
            width = allowed_width(depth, node_values(nodes.importance, node),
                                  config)
            widen = (~leaf & ~saturated & (count + reserved_new < width)
                     & jnp.any(free, axis=1))
            widen_edge = jnp.argmax(free, axis=1).astype(jnp.int32)
        else:
            leaf = leaf | ~jnp.any(e.valid, axis=1)
            widen = jnp.zeros((b,), bool)
            widen_edge = jnp.zeros((b,), jnp.int32)
        chosen, can = select_edge(e, at_root, blocked, gumbel, config)
        child = e.child[rows, chosen]
        now = jnp.where(leaf, REVISIT, jnp.where(widen, EXPAND, jnp.where(
            ~can, COLLISION, jnp.where(child < 0, EXPAND, _CONTINUE))))
        stop = ~done & (now != _CONTINUE)
        go = ~done & (now == _CONTINUE)
        kind = jnp.where(stop, now, kind)
        edge = jnp.where(stop, jnp.where(widen, widen_edge, chosen), edge)
        node = jnp.where(go, child, node)
        at = jnp.minimum(step + 1, d)
        path = path.at[:, at].set(jnp.where(go, child, path[:, at]))
        return step + 1, node, path, done | stop, kind, edge

    zeros = jnp.zeros((b,), jnp.int32)
    # The first step is at the roots (their own rule), the rest inside.
    carry = body((jnp.int32(0), zeros, path, ~running, zeros + NONE, zeros),
                 True)
    _, node, path, _, kind, edge = jax.lax.while_loop(
        lambda carry: jnp.any(~carry[3]), lambda c: body(c, False), carry)
    return kind, node, edge, path


def select_simulations(tree: Tree, running: jax.Array, gumbel: jax.Array,
                       config: MCTSConfig) -> Selection:
    """The S simulations of one iteration, each under the virtual loss of
    the ones before it."""
    b, s, d = tree.batch_size, config.parallel, config.max_depth
    if s == 1:
        kind, node, edge, path = descend(tree, running, gumbel, config)
        return Selection(kind=kind[:, None], node=node[:, None],
                         edge=edge[:, None], path=path[:, None])

    def one(i, carry):
        pending, kind, node, edge, path = carry
        k, x, e, p = descend(tree, running, gumbel, config, pending,
                             (kind, node, edge, i))
        counted = jnp.where(((k == EXPAND) | (k == REVISIT))[:, None]
                            & (p >= 0), p, tree.capacity)
        pending = pending.at[jnp.arange(b)[:, None], counted].add(
            1, mode="drop")
        return (pending, kind.at[:, i].set(k), node.at[:, i].set(x),
                edge.at[:, i].set(e), path.at[:, i].set(p))

    zeros = jnp.zeros((b, s), jnp.int32)
    init = (jnp.zeros(tree.parent.shape, jnp.int32), zeros + NONE, zeros,
            zeros, jnp.full((b, s, d + 1), -1, jnp.int32))
    _, kind, node, edge, path = jax.lax.fori_loop(0, s, one, init)
    return Selection(kind=kind, node=node, edge=edge, path=path)
