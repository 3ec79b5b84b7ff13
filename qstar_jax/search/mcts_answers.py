"""Answer selection from a finished MCTS tree.

On device (`answers`, part of every `MCTSResult`):

* root action: the most visited root edge (ties to the lowest edge); with
  Gumbel root selection, among the most visited edges the one with the
  largest g + logit + completed Q (Gumbel MuZero's final action);
* most-visited path: from the root, always the most visited child (ties to
  the lowest edge) until a node without children;
* best mean value: the terminal node with the largest value_sum / visits;
* ORM reranking: the terminal node with the largest outcome score.

On the host (`terminal_leaves`, `weighted_vote`): the terminal nodes of a
row with their mean values and outcome scores, and a vote over their
answers weighted by either.
"""

from __future__ import annotations

import collections
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.search.mcts_select import (completed_q, edge_stats,
                                          halving_score)
from qstar_jax.search.mcts_types import (MCTSConfig, MCTSNodes, MCTSResult,
                                         MCTSStats)
from qstar_jax.search.tree import Tree, mean_values, node_values


def most_visited_path(tree: Tree, max_depth: int) -> jax.Array:
    """[B] int32 the end of the most-visited path from the root."""
    b = tree.batch_size

    def body(carry):
        step, node, done = carry
        child = node_values(tree.children_index, node)            # [B, C]
        visits = jnp.where(child >= 0, node_values(tree.visit_count, child),
                           -1)
        best = jnp.argmax(visits, axis=1)
        nxt = child[jnp.arange(b), best]
        stop = done | (nxt < 0)
        return step + 1, jnp.where(stop, node, nxt), stop

    _, node, _ = jax.lax.while_loop(
        lambda c: (c[0] <= max_depth) & jnp.any(~c[2]), body,
        (jnp.int32(0), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool)))
    return node


def best_terminal(tree: Tree, score: jax.Array) -> jax.Array:
    """[B] int32 the created terminal node with the largest score ([B, N];
    ties to the lowest slot), -1 if the row has none."""
    used = jnp.arange(tree.capacity) < tree.num_nodes[:, None]
    ok = tree.terminal & used
    masked = jnp.where(ok, score, -jnp.inf)
    best = jnp.max(masked, axis=1, keepdims=True)
    node = jnp.argmax(ok & (masked == best), axis=1).astype(jnp.int32)
    return jnp.where(jnp.any(ok, axis=1), node, -1)


def root_choice(tree: Tree, gumbel: jax.Array, config: MCTSConfig
                ) -> tuple[jax.Array, jax.Array]:
    """(root action [B] int32, root edge visits [B, C] int32)."""
    b = tree.batch_size
    root = jnp.zeros((b,), jnp.int32)
    e = edge_stats(tree, root, None, config)
    visits = e.visits.astype(jnp.int32)
    if config.root_rule == "gumbel":
        most = jnp.max(e.visits, axis=1)
        score = halving_score(e, gumbel, completed_q(e, config), most)
    else:
        score = jnp.where(e.valid, e.visits, -1.0)
    return jnp.argmax(score, axis=1).astype(jnp.int32), visits


def answers(tree: Tree, stats: MCTSStats, gumbel: jax.Array,
            config: MCTSConfig) -> MCTSResult:
    """The `MCTSResult` of a finished search."""
    nodes: MCTSNodes = tree.extra
    slots = jnp.broadcast_to(jnp.arange(tree.capacity), tree.parent.shape)
    action, visits = root_choice(tree, gumbel, config)
    return MCTSResult(
        tree=tree, root_action=action, root_visits=visits,
        most_visited=most_visited_path(tree, config.max_depth),
        best_value=best_terminal(tree, mean_values(tree, slots)),
        best_outcome=best_terminal(tree, nodes.outcome), stats=stats)


class Leaf(NamedTuple):
    """A terminal node of one row (host values).

    Attributes:
      node: its slot.
      visits: its visit count.
      mean_value: value_sum / visits.
      outcome: its outcome score (ORM).
    """

    node: int
    visits: int
    mean_value: float
    outcome: float


def terminal_leaves(result: MCTSResult, b: int) -> list[Leaf]:
    """Host helper: row b's terminal nodes, in slot order."""
    tree = result.tree
    num = int(tree.num_nodes[b])
    terminal = np.asarray(tree.terminal[b, :num])
    visits = np.asarray(tree.visit_count[b, :num])
    total = np.asarray(tree.value_sum[b, :num])
    outcome = np.asarray(tree.extra.outcome[b, :num])
    return [Leaf(node=int(x), visits=int(visits[x]),
                 mean_value=float(total[x] / max(visits[x], 1)),
                 outcome=float(outcome[x]))
            for x in np.flatnonzero(terminal)]


def weighted_vote(answers: Sequence[str | None],
                  weights: Sequence[float]) -> str | None:
    """The answer with the largest total weight; ties to the one seen first.

    Args:
      answers: one extracted answer per terminal leaf (None: no answer).
      weights: each leaf's weight (its mean value or outcome score;
        non-finite weights count 0).
    """
    if len(answers) != len(weights):
        raise ValueError(f"weighted_vote: {len(answers)} answers but "
                         f"{len(weights)} weights")
    totals: dict[str, float] = collections.OrderedDict()
    for answer, weight in zip(answers, weights):
        if answer is not None:
            w = float(weight) if np.isfinite(weight) else 0.0
            totals[answer] = totals.get(answer, 0.0) + w
    if not totals:
        return None
    top = max(totals.values())
    return next(a for a, w in totals.items() if w == top)
