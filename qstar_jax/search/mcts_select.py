"""MCTS selection: edge statistics, Q transforms and the selection rules.

All functions score the C edges of one node per row ([B] nodes, [B, C]
scores) from the tree's visit counts and value sums, plus the virtual
visits of simulations selected earlier in the same iteration:

  n(c)  = visits(child c) + virtual_loss * pending(child c)
  W(c)  = value_sum(child c) + virtual_loss * pending(c) * virtual_value
  Q(c)  = reward(child c) + discount * W(c) / n(c)        (n(c) > 0)
  N     = visits(node) + virtual_loss * pending(node)
  p     = softmax of the edge prior logits over the node's valid edges

Rules (larger is better; the argmax takes the lowest edge among ties):

* 'ucb' (AlphaLLM): q(c) + c_ucb * sqrt(2 ln N / n(c)); an unvisited
  valid edge scores +inf (tried first).
* 'puct' (AlphaZero / TS-LLM / mctx): q(c) + (pb_c_init + ln((N + pb_c_base
  + 1) / pb_c_base)) * p(c) * sqrt(N) / (n(c) + 1).
* 'gumbel' (Gumbel MuZero): inside the tree, softmax(logit + sigma(q)) -
  n / (1 + sum n); at the root, sequential halving over the considered
  edges with score g + logit + sigma(q), g the row's Gumbel noise.

q(c) is Q(c) through `config.q_transform` ('raw': an unvisited edge reads
N's mean value; 'min_max': mctx's normalisation by the parent and its
visited children); 'gumbel' uses the completed Q of Gumbel MuZero (mixed
value for unvisited edges, rescaled to [0, 1], times (maxvisit_init + max
n) * value_scale).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.search.mcts_types import MCTSConfig, MCTSNodes
from qstar_jax.search.tree import Tree, node_values


class EdgeStats(NamedTuple):
    """Statistics of the C edges of one node per row.

    Attributes:
      child: [B, C] int32 child slots (-1: not created).
      visits: [B, C] float32 n(c), virtual visits included.
      q: [B, C] float32 Q(c) (0 where n(c) = 0).
      logits: [B, C] float32 prior logits (-inf on invalid edges).
      valid: [B, C] bool the edge can be taken (created child in 'widening'
        mode, a finite prior in 'enumerated' mode).
      node_visits: [B] float32 N.
      node_value: [B] float32 the node's mean value (virtual loss included).
      raw_value: [B] float32 the node's own evaluation.
    """

    child: jax.Array
    visits: jax.Array
    q: jax.Array
    logits: jax.Array
    valid: jax.Array
    node_visits: jax.Array
    node_value: jax.Array
    raw_value: jax.Array


def edge_stats(tree: Tree, node: jax.Array, pending: jax.Array | None,
               config: MCTSConfig) -> EdgeStats:
    """`EdgeStats` of each row's `node` ([B] int32).

    Args:
      tree: the trees (`tree.extra` is `MCTSNodes`).
      node: [B] int32 slots.
      pending: [B, N] int32 virtual visits of this iteration, or None.
      config: the settings (virtual loss, discount, expansion mode).
    """
    nodes: MCTSNodes = tree.extra
    child = node_values(tree.children_index, node)              # [B, C]
    exists = child >= 0
    vl = float(config.virtual_loss)

    def virtual(x):
        return (node_values(pending, x).astype(jnp.float32) * vl
                if pending is not None else jnp.zeros(x.shape, jnp.float32))

    extra_child = jnp.where(exists, virtual(child), 0.0)
    visits = jnp.where(exists, node_values(tree.visit_count, child), 0
                       ).astype(jnp.float32) + extra_child
    total = jnp.where(exists, node_values(tree.value_sum, child), 0.0) + (
        extra_child * config.virtual_value)
    q = jnp.where(visits > 0, node_values(tree.reward, child)
                  + config.discount * (total / jnp.maximum(visits, 1.0)),
                  0.0)
    logits = node_values(tree.children_prior_logits, node)
    if config.expansion == "widening":
        valid = exists
    else:
        valid = logits > -jnp.inf
    logits = jnp.where(valid, logits, -jnp.inf)
    extra_node = virtual(node)
    node_visits = node_values(tree.visit_count, node).astype(
        jnp.float32) + extra_node
    node_value = (node_values(tree.value_sum, node)
                  + extra_node * config.virtual_value) / jnp.maximum(
                      node_visits, 1.0)
    return EdgeStats(child=child, visits=visits, q=q, logits=logits,
                     valid=valid, node_visits=node_visits,
                     node_value=node_value,
                     raw_value=node_values(nodes.raw_value, node))


def prior_probs(e: EdgeStats) -> jax.Array:
    """[B, C] softmax of the prior logits over valid edges (0 elsewhere)."""
    top = jnp.max(jnp.where(e.valid, e.logits, -jnp.inf), axis=1,
                  keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    w = jnp.where(e.valid, jnp.exp(e.logits - top), 0.0)
    return w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-30)


def raw_q(e: EdgeStats) -> jax.Array:
    """Q of visited edges; unvisited edges read the node's mean value."""
    return jnp.where(e.visits > 0, e.q, e.node_value[:, None])


def min_max_q(e: EdgeStats, epsilon: float = 1e-8) -> jax.Array:
    """mctx's parent-and-siblings normalisation of Q to [0, 1]."""
    v = e.node_value[:, None]
    visited = e.visits > 0
    safe = jnp.where(visited, e.q, v)
    low = jnp.minimum(v, jnp.min(safe, axis=1, keepdims=True))
    high = jnp.maximum(v, jnp.max(safe, axis=1, keepdims=True))
    completed = jnp.where(visited, e.q, low)
    return (completed - low) / jnp.maximum(high - low, epsilon)


def completed_q(e: EdgeStats, config: MCTSConfig,
                epsilon: float = 1e-8) -> jax.Array:
    """Gumbel MuZero's completed, rescaled and scaled Q ([B, C])."""
    visited = e.visits > 0
    probs = jnp.maximum(prior_probs(e), jnp.finfo(jnp.float32).tiny)
    sum_n = jnp.sum(e.visits, axis=1)
    sum_p = jnp.sum(jnp.where(visited, probs, 0.0), axis=1, keepdims=True)
    weighted = jnp.sum(jnp.where(
        visited, probs * e.q / jnp.where(visited, sum_p, 1.0), 0.0), axis=1)
    mixed = (e.raw_value + sum_n * weighted) / (sum_n + 1.0)
    q = jnp.where(visited, e.q, mixed[:, None])
    low = jnp.min(jnp.where(e.valid, q, jnp.inf), axis=1, keepdims=True)
    high = jnp.max(jnp.where(e.valid, q, -jnp.inf), axis=1, keepdims=True)
    low = jnp.where(jnp.isfinite(low), low, 0.0)
    high = jnp.where(jnp.isfinite(high), high, 0.0)
    q = (q - low) / jnp.maximum(high - low, epsilon)
    scale = config.gumbel_maxvisit_init + jnp.max(e.visits, axis=1)
    return scale[:, None] * config.gumbel_value_scale * q


def transformed_q(e: EdgeStats, config: MCTSConfig) -> jax.Array:
    """q(c) of 'ucb' and 'puct' through `config.q_transform`."""
    return min_max_q(e) if config.q_transform == "min_max" else raw_q(e)


def ucb_scores(e: EdgeStats, config: MCTSConfig) -> jax.Array:
    """[B, C] AlphaLLM's UCB (unvisited valid edges: +inf)."""
    explore = jnp.sqrt(2.0 * jnp.log(e.node_visits)[:, None]
                       / jnp.maximum(e.visits, 1.0))
    score = transformed_q(e, config) + config.c_ucb * explore
    return jnp.where(e.visits > 0, score, jnp.inf)


def puct_scores(e: EdgeStats, config: MCTSConfig) -> jax.Array:
    """[B, C] PUCT with the policy prior."""
    n = e.node_visits[:, None]
    pb_c = config.pb_c_init + jnp.log(
        (n + config.pb_c_base + 1.0) / config.pb_c_base)
    policy = jnp.sqrt(n) * pb_c * prior_probs(e) / (e.visits + 1.0)
    return transformed_q(e, config) + policy


def gumbel_interior_scores(e: EdgeStats, q: jax.Array) -> jax.Array:
    """[B, C] Gumbel MuZero's deterministic interior selection (q is
    `completed_q(e, config)`)."""
    logits = jnp.where(e.valid, e.logits + q, -jnp.inf)
    top = jnp.max(logits, axis=1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    w = jnp.where(e.valid, jnp.exp(logits - top), 0.0)
    probs = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-30)
    return probs - e.visits / (1.0 + jnp.sum(e.visits, axis=1,
                                             keepdims=True))


def considered_visits(max_considered: int, num_simulations: int
                      ) -> tuple[int, ...]:
    """Sequential halving's schedule: the visit count an edge must have to
    be considered at each simulation of the root (Karnin et al. 2013, as
    used by Gumbel MuZero).

    With m edges considered, each of log2(m) phases gives every remaining
    edge max(1, floor(n / (log2(max) * m))) more visits in round-robin
    order, then halves m (never below 2); the sequence lists, simulation by
    simulation, the visit count of the edge to be visited.
    """
    if max_considered <= 1:
        return tuple(range(num_simulations))
    phases = int(math.ceil(math.log2(max_considered)))
    schedule: list[int] = []
    visits = [0] * max_considered
    m = max_considered
    while len(schedule) < num_simulations:
        rounds = max(1, int(num_simulations / (phases * m)))
        for _ in range(rounds):
            schedule.extend(visits[:m])
            visits[:m] = [v + 1 for v in visits[:m]]
        m = max(2, m // 2)
    return tuple(schedule[:num_simulations])


def considered_table(max_considered: int, num_simulations: int) -> np.ndarray:
    """[max_considered + 1, num_simulations] int32 schedules for every
    number of considered edges."""
    return np.asarray([considered_visits(m, num_simulations)
                       for m in range(max_considered + 1)], np.int32)


def gumbel_root_scores(e: EdgeStats, gumbel: jax.Array, q: jax.Array,
                       config: MCTSConfig) -> jax.Array:
    """[B, C] sequential halving with Gumbel noise at the root.

    Only edges whose visit count equals the schedule's count for this
    simulation (the number of root visits so far) are considered; q is
    `completed_q(e, config)`.
    """
    table = jnp.asarray(considered_table(config.max_considered,
                                         config.num_simulations))
    num_valid = jnp.sum(e.valid, axis=1)
    m = jnp.minimum(config.max_considered, num_valid)
    sim = jnp.minimum(jnp.sum(e.visits, axis=1).astype(jnp.int32),
                      config.num_simulations - 1)
    wanted = table[m, sim].astype(jnp.float32)
    return halving_score(e, gumbel, q, wanted)


def halving_score(e: EdgeStats, gumbel: jax.Array, q: jax.Array,
                  wanted: jax.Array) -> jax.Array:
    """g + logit + q on edges with `wanted` [B] visits, -inf elsewhere."""
    top = jnp.max(e.logits, axis=1, keepdims=True)
    logits = e.logits - jnp.where(jnp.isfinite(top), top, 0.0)
    score = jnp.maximum(-1e9, gumbel + logits + q)
    keep = (e.visits == wanted[:, None]) & e.valid
    return jnp.where(keep, score, -jnp.inf)


def rule_scores(rule: str, e: EdgeStats, config: MCTSConfig, at_root: bool,
                gumbel: jax.Array, q: jax.Array | None) -> jax.Array:
    """[B, C] the scores of `rule` ('gumbel' at the root: halving; q is
    `completed_q(e, config)` for 'gumbel', else unused)."""
    if rule == "ucb":
        return ucb_scores(e, config)
    if rule == "puct":
        return puct_scores(e, config)
    if at_root:
        return gumbel_root_scores(e, gumbel, q, config)
    return gumbel_interior_scores(e, q)


def select_edge(e: EdgeStats, at_root: bool, blocked: jax.Array | None,
                gumbel: jax.Array, config: MCTSConfig
                ) -> tuple[jax.Array, jax.Array]:
    """The edge each row takes at the nodes of `e`.

    Args:
      e: the nodes' `EdgeStats`.
      at_root: the nodes are the roots (static: a descent's first step), so
        `config.root_rule` applies.
      blocked: [B, C] bool edges that may not be taken (reserved by an
        earlier simulation of the iteration), or None.
      gumbel: [B, C] float32 the rows' root Gumbel noise.
      config: the settings.

    Returns:
      edge [B] int32 and ok [B] bool (some edge could be taken).
    """
    allowed = e.valid if blocked is None else e.valid & ~blocked
    rule = config.root_rule if at_root else config.selection
    q = completed_q(e, config) if rule == "gumbel" else None
    score = jnp.where(allowed, rule_scores(rule, e, config, at_root, gumbel,
                                           q), -jnp.inf)
    best = jnp.max(score, axis=1, keepdims=True)
    # Lowest edge among the best (an all -inf row picks among allowed).
    pick = allowed & ((score == best) | (best == -jnp.inf))
    edge = jnp.argmax(pick, axis=1).astype(jnp.int32)
    return edge, jnp.any(allowed, axis=1)


def allowed_width(depth: jax.Array, importance: jax.Array,
                  config: MCTSConfig) -> jax.Array:
    """n(s) = max(c_min(t), min(floor(alpha * I(s)) + 1, c_max(t))).

    Args:
      depth: [...] int32 t; importance: [...] float32 I(s).

    Returns:
      [...] int32 the children a node may have.
    """
    def by_depth(widths):
        table = jnp.asarray(widths, jnp.int32)
        return table[jnp.minimum(depth, len(widths) - 1)]

    wanted = jnp.floor(config.alpha * importance).astype(jnp.int32) + 1
    return jnp.maximum(by_depth(config.c_min),
                       jnp.minimum(wanted, by_depth(config.c_max)))
