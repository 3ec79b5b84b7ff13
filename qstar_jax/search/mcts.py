"""eta-MCTS (AlphaLLM) and mctx-style MCTS: batched, on device, one loop.

`run_mcts` searches B problems at once in one `lax.while_loop` of
`num_simulations / parallel` iterations over the shared `Tree`. The root is
evaluated first (visit count 1, value sum = its score). One iteration, for
every running row:

1. Selection: S simulations descend from the root one after another; each
   adds virtual loss to its path, so later ones spread out (`mcts_descend`,
   `mcts_select`).
   At a node the descent stops with
   * REVISIT when the node is a leaf: terminal, at `max_depth`, or
     saturated without children (its stored score is backed up again);
   * EXPAND ('widening') while the node has fewer children (created plus
     reserved this iteration) than its allowed width n(s), at its lowest
     free edge; ('enumerated') when the selected action has no child yet;
   * COLLISION when every edge it could take is reserved (dropped).
   Otherwise it moves to the child of the selected edge.
2. Expansion: one batched `propose_fn` call for the B x S expansions gives
   R candidates each; state merge keeps one (`mcts_merge`); the kept
   options take slots num_nodes, num_nodes + 1, ... in simulation order.
   A row whose expansion finds no free slot stops (status FULL) after this
   iteration; the expansion is dropped. All candidates invalid: no node,
   and the parent is saturated ('widening') or the action invalid.
3. Evaluation: one batched `evaluate_fn` call scores the new nodes.
   Non-finite values, outcomes and rewards become `nan_value`, non-finite
   prior logits -inf, all counted in `nan_count`; no NaN reaches a sum.
4. Backup: along each path, leaf first, G = value(leaf) and then G =
   reward(child) + discount * G at each ancestor; every node on the path
   gets visit_count + 1 and value_sum + G (mean backup).

Keys: row b splits keys[b] into (root, gumbel, loop) keys; simulation s of
iteration i uses k = fold_in(fold_in(loop, i), s), fold_in(k, 0) for its
proposal and fold_in(k, 1) for its evaluation; the root's evaluation uses
the root key. A row's search depends only on its own key and tree.

Example:
  >>> config = MCTSConfig(num_nodes=128, num_simulations=64, parallel=4)
  >>> tree = init_tree(prompts, lengths, num_nodes=128, max_step_tokens=32,
  ...                  max_children=config.max_width)
  >>> search = jax.jit(functools.partial(run_mcts, propose_fn, evaluate_fn,
  ...                                    config=config))
  >>> result = search(tree, keys)   # result.most_visited: [B] nodes
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qstar_jax.search.contracts import check_keys
from qstar_jax.search.interfaces import call_if
from qstar_jax.search.mcts_answers import answers
from qstar_jax.search.mcts_interfaces import (EvaluateFn, Evaluation,
                                              ProposeFn, check_evaluation,
                                              check_options)
from qstar_jax.search.mcts_descend import select_simulations
from qstar_jax.search.mcts_merge import choose_options
from qstar_jax.search.mcts_types import (COLLISION, DONE, EXPAND, FULL,
                                         REVISIT, RUNNING, MCTSConfig,
                                         MCTSNodes, MCTSResult, MCTSStats,
                                         mcts_nodes, zero_stats)
from qstar_jax.search.tree import Tree, add_nodes, node_values, put_values

def _clean(x: jax.Array, replacement: float) -> tuple[jax.Array, jax.Array]:
    """(x with non-finite entries replaced, the replaced mask)."""
    x = x.astype(jnp.float32)
    bad = ~jnp.isfinite(x)
    return jnp.where(bad, replacement, x), bad


def _clean_logits(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Prior logits: NaN and +inf become -inf (an invalid edge), counted;
    -inf is a legitimate invalid edge and is not counted."""
    x = x.astype(jnp.float32)
    bad = jnp.isnan(x) | (x == jnp.inf)
    return jnp.where(bad, -jnp.inf, x), bad


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
    """x[b, s, index[b, s], ...] for [B, S, R, ...] x and [B, S] index."""
    idx = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=2)[:, :, 0]


def _backup(tree: Tree, path: jax.Array, leaf_value: jax.Array,
            backed: jax.Array, discount: float) -> Tree:
    """Mean backup along [B, S, D + 1] paths of leaves with [B, S] values.

    A loop from the deepest leaf of the batch up to the root (not over all
    D + 1 levels): at level j, each path's node gets G_j (G = the leaf's
    value at its own level, then reward(child) + discount * G).
    """
    b, s, _ = path.shape
    length = jnp.where(backed, jnp.sum(path >= 0, axis=2) - 1, -1)
    rows = jnp.arange(b)[:, None]

    def body(carry):
        j, ret, below, visits, total = carry       # below: reward at j + 1
        node = jax.lax.dynamic_index_in_dim(path, j, axis=2,
                                            keepdims=False)     # [B, S]
        ret = jnp.where(j == length, leaf_value, below + discount * ret)
        use = (j <= length) & (node >= 0)
        target = jnp.where(use, node, tree.capacity)
        visits = visits.at[rows, target].add(1, mode="drop")
        total = total.at[rows, target].add(ret, mode="drop")
        below = jnp.where(use, node_values(tree.reward, node), 0.0)
        return j - 1, ret, below, visits, total

    zeros = jnp.zeros((b, s), jnp.float32)
    _, _, _, visits, total = jax.lax.while_loop(
        lambda carry: carry[0] >= 0, body,
        (jnp.max(length), zeros, zeros, tree.visit_count, tree.value_sum))
    return tree.replace(visit_count=visits, value_sum=total)


def _iteration(i, tree: Tree, stats: MCTSStats, gumbel: jax.Array,
               loop_keys: jax.Array, propose_fn: ProposeFn,
               evaluate_fn: EvaluateFn, config: MCTSConfig):
    """One selection / expansion / evaluation / backup round."""
    b, n, s = tree.batch_size, tree.capacity, config.parallel
    rows = jnp.arange(b)[:, None]
    running = stats.status == RUNNING
    sel = select_simulations(tree, running, gumbel, config)
    sim_keys = jax.vmap(lambda key: jax.vmap(
        lambda j: jax.random.fold_in(key, j))(jnp.arange(s)))(
            jax.vmap(jax.random.fold_in, (0, None))(loop_keys, i))
    fold = jax.vmap(jax.vmap(jax.random.fold_in, (0, None)), (0, None))
    expanding = sel.kind == EXPAND
    parents = sel.node

    options = call_if(jnp.any(expanding), propose_fn, tree, parents,
                      sel.edge, fold(sim_keys, 0))
    check_options(options, "propose_fn", b, s, tree.max_step_tokens)
    choice = choose_options(tree, parents, expanding, options,
                            config.merge_threshold)
    ok = choice.ok
    rank = jnp.cumsum(ok, axis=1, dtype=jnp.int32) - 1
    slot = tree.num_nodes[:, None] + rank
    created = ok & (slot < n)
    dropped = ok & ~created
    failed = expanding & ~ok
    reward, reward_bad = _clean(_take(options.reward, choice.index),
                                config.nan_value)
    prior, prior_bad = _clean_logits(_take(options.prior_logits,
                                           choice.index))
    tree = add_nodes(tree, jnp.where(created, slot, -1), parents, sel.edge,
                     _take(options.step_tokens, choice.index),
                     _take(options.step_lengths, choice.index), reward,
                     _take(options.terminal, choice.index).astype(bool))
    nodes: MCTSNodes = tree.extra
    if config.expansion == "widening":
        priors = tree.children_prior_logits.at[
            rows, jnp.where(created, parents, n), sel.edge].set(
                prior, mode="drop")
        nodes = nodes.replace(saturated=nodes.saturated.at[
            rows, jnp.where(failed, parents, n)].set(True, mode="drop"))
        prior_bad = prior_bad & created
    else:
        priors = tree.children_prior_logits.at[
            rows, jnp.where(failed, parents, n), sel.edge].set(
                -jnp.inf, mode="drop")
        prior_bad = jnp.zeros_like(created)
    tree = tree.replace(children_prior_logits=priors, extra=nodes)

    new = jnp.where(created, slot, 0)
    evaluation: Evaluation = call_if(jnp.any(created), evaluate_fn, tree,
                                     new, fold(sim_keys, 1))
    check_evaluation(evaluation, "evaluate_fn", b, s, tree.max_children,
                     config.expansion == "enumerated")
    tree, value, eval_bad = _store_evaluation(tree, evaluation, jnp.where(
        created, slot, -1), config)
    target = jnp.where(created, parents, n)
    gap = jnp.abs(value - node_values(nodes.raw_value, parents))
    nodes = tree.extra.replace(importance=tree.extra.importance.at[
        rows, target].max(gap, mode="drop"))
    tree = tree.replace(extra=nodes)

    revisit = sel.kind == REVISIT
    leaf_value = jnp.where(created, value,
                           node_values(nodes.raw_value, sel.node))
    depth = node_values(tree.depth, parents) + 1
    path = sel.path.at[rows[..., None], jnp.arange(s)[None, :, None],
                       jnp.where(created, depth, config.max_depth + 1)[
                           ..., None]].set(slot[..., None], mode="drop")
    tree = _backup(tree, path, leaf_value, created | revisit,
                   config.discount)

    def total(x):
        return jnp.sum(x, axis=1, dtype=jnp.int32)

    def candidates(mask):        # An optional [B, S, R] Options flag.
        if mask is None:
            return 0
        return total(jnp.sum(mask.astype(bool) & expanding[..., None],
                             axis=2, dtype=jnp.int32))

    bad = jnp.where(created, reward_bad.astype(jnp.int32) + eval_bad
                    + prior_bad, 0)
    generated = total(jnp.where(expanding, options.generated_tokens, 0)) + \
        total(jnp.where(created, evaluation.generated_tokens, 0))
    status = jnp.where(running & jnp.any(dropped, axis=1), FULL,
                       stats.status)
    stats = stats.replace(
        simulations=stats.simulations + total(created | revisit),
        expansions=stats.expansions + total(created),
        revisits=stats.revisits + total(revisit),
        collisions=stats.collisions + total(sel.kind == COLLISION),
        failed=stats.failed + total(failed),
        dropped=stats.dropped + total(dropped),
        merge_rejected=stats.merge_rejected + total(choice.rejected),
        merge_fallbacks=stats.merge_fallbacks + total(choice.fallback),
        generated_tokens=stats.generated_tokens + generated,
        model_calls=stats.model_calls + jnp.any(expanding, axis=1)
        + jnp.any(created, axis=1),
        nan_count=stats.nan_count + total(bad),
        truncated=stats.truncated + candidates(options.truncated),
        overflow=stats.overflow + candidates(options.overflow),
        max_depth=jnp.maximum(stats.max_depth, jnp.max(
            jnp.where(created, depth, 0), axis=1)),
        status=status)
    return tree, stats


def _store_evaluation(tree: Tree, evaluation: Evaluation, slots: jax.Array,
                      config: MCTSConfig):
    """Writes raw values, outcomes (and edge priors) of [B, K] new slots
    (-1: skipped); returns (tree, clean values [B, K], bad [B, K] int32:
    replaced entries per node)."""
    value, value_bad = _clean(evaluation.value, config.nan_value)
    outcome, outcome_bad = _clean(evaluation.outcome, config.nan_value)
    nodes: MCTSNodes = tree.extra
    tree = tree.replace(extra=nodes.replace(
        raw_value=put_values(nodes.raw_value, slots, value),
        outcome=put_values(nodes.outcome, slots, outcome)))
    bad = value_bad.astype(jnp.int32) + outcome_bad
    if config.expansion == "enumerated":
        priors, prior_bad = _clean_logits(evaluation.prior_logits)
        tree = tree.replace(children_prior_logits=put_values(
            tree.children_prior_logits, slots, priors))
        bad = bad + jnp.sum(prior_bad, axis=2)
    return tree, value, bad


def _check_tree(tree: Tree, config: MCTSConfig) -> None:
    if tree.capacity != config.num_nodes:
        raise ValueError(f"run_mcts: the tree has {tree.capacity} slots per "
                         f"row but config.num_nodes is {config.num_nodes}")
    if config.expansion == "widening" and \
            tree.max_children < config.max_width:
        raise ValueError(
            f"run_mcts: the tree has C = {tree.max_children} edges per node "
            f"but c_min / c_max allow {config.max_width} children; build "
            f"it with max_children >= {config.max_width}")
    if tree.extra is not None:
        raise ValueError("run_mcts: give a fresh tree (init_tree, extra "
                         "None); the search attaches its MCTSNodes")


def run_mcts(propose_fn: ProposeFn, evaluate_fn: EvaluateFn, tree: Tree,
             keys: jax.Array, *, config: MCTSConfig) -> MCTSResult:
    """MCTS on B problems at once (jit with the functions and config static).

    Args:
      propose_fn: candidate options of the nodes being expanded
        (`ProposeFn`).
      evaluate_fn: scores of new nodes (`EvaluateFn`).
      tree: fresh trees from `init_tree` (N = config.num_nodes slots; C =
        the actions per node for 'enumerated', >= config.max_width for
        'widening'; T = the longest option).
      keys: [B] PRNG keys, one per problem.
      config: static settings.

    Returns:
      `MCTSResult` (trees, root action and visits, answers, statistics).
    """
    _check_tree(tree, config)
    b, c = tree.batch_size, tree.max_children
    check_keys("run_mcts", keys, b)
    split = jax.vmap(lambda key: jax.random.split(key, 3))(keys)
    root_keys, gumbel_keys, loop_keys = split[:, 0], split[:, 1], split[:, 2]
    gumbel = config.gumbel_scale * jax.vmap(
        lambda key: jax.random.gumbel(key, (c,), jnp.float32))(gumbel_keys)
    tree = tree.replace(extra=mcts_nodes(tree))
    root = jnp.zeros((b, 1), jnp.int32)
    evaluation = evaluate_fn(tree, root, root_keys[:, None])
    check_evaluation(evaluation, "evaluate_fn", b, 1, c,
                     config.expansion == "enumerated")
    tree, value, bad = _store_evaluation(tree, evaluation, root, config)
    tree = tree.replace(visit_count=tree.visit_count.at[:, 0].set(1),
                        value_sum=tree.value_sum.at[:, 0].set(value[:, 0]))
    stats = zero_stats(b).replace(
        model_calls=jnp.ones((b,), jnp.int32),
        generated_tokens=evaluation.generated_tokens[:, 0].astype(jnp.int32),
        nan_count=bad[:, 0])

    def cond(carry):
        i, _, stats = carry
        return (i < config.num_iterations) & jnp.any(stats.status == RUNNING)

    def body(carry):
        i, tree, stats = carry
        tree, stats = _iteration(i, tree, stats, gumbel, loop_keys,
                                 propose_fn, evaluate_fn, config)
        return i + 1, tree, stats

    _, tree, stats = jax.lax.while_loop(cond, body, (jnp.int32(0), tree,
                                                     stats))
    stats = stats.replace(status=jnp.where(stats.status == RUNNING, DONE,
                                           stats.status))
    return answers(tree, stats, gumbel, config)
