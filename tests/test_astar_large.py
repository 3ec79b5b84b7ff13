"""A* at large N: the selection cache (per-block best and worst OPEN f)
gives the answers of a full scan (the next pop, recycle's victims), and
whole searches with up to 4096 slots, recycling or not, pop exactly what
the heapq reference pops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.search.astar import AStarConfig, astar_search
from qstar_jax.search.astar_tree import (CLOSED, FREE, OPEN,
                                         _cached_victims, _ranked_victims,
                                         add_children, best_open_node,
                                         init_astar_tree, recycle,
                                         refresh_selection, selection_block,
                                         set_scores)
from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.reference_astar import reference_astar
from qstar_jax.search.synthetic import SyntheticEnv


def test_selection_block_is_about_sqrt_n():
    assert [selection_block(n) for n in (2, 64, 512, 1024, 4096)] == \
        [8, 8, 16, 32, 64]


def _expansion(rng, b, k):
    zeros = jnp.zeros((b, k))
    return Expansion(
        step_tokens=jnp.ones((b, k, 1), jnp.int32),
        step_lengths=jnp.ones((b, k), jnp.int32), log_probs=zeros,
        valid=jnp.asarray(rng.random((b, k)) < 0.8),
        terminal=jnp.zeros((b, k), bool), reward=zeros, q_value=zeros,
        generated_tokens=jnp.zeros(b, jnp.int32))


def _full_scan(tree):
    status, f = np.asarray(tree.extra.status), np.asarray(tree.extra.f)
    score = np.where(status == OPEN, f, -np.inf)
    return np.argmax(score, axis=1), (status == OPEN).any(axis=1)


@pytest.mark.parametrize("n", [37, 600])
def test_cached_selection_equals_full_scan_under_every_update(n):
    """Random pops, insertions, rescoring, recycling and closes by hand
    (each followed by `refresh_selection`, as documented): after each, the
    cached answer is the full scan's (ties included), and the block values
    equal a full recomputation."""
    rng = np.random.default_rng(n)
    b, k = 6, 5
    tree = init_astar_tree(jnp.ones((b, 1), jnp.int32),
                           jnp.ones(b, jnp.int32), num_nodes=n,
                           max_step_tokens=1, max_children=k)
    pick = jax.jit(best_open_node)
    for i in range(60):
        node = pick(tree)
        want, has_open = _full_scan(tree)
        got = np.asarray(node)
        assert (got[has_open] == want[has_open]).all(), i
        exact = refresh_selection(tree.extra)
        np.testing.assert_array_equal(tree.extra.block_best,
                                      exact.block_best)
        np.testing.assert_array_equal(tree.extra.block_worst,
                                      exact.block_worst)
        nodes = tree.extra
        # The pop, as astar_search does it (status only, by hand).
        tree = tree.replace(extra=nodes.replace(status=nodes.status.at[
            jnp.arange(b), node].set(CLOSED)))
        f = jnp.asarray(rng.integers(-3, 4, (b, k)) / 2, jnp.float32)
        tree, child = add_children(tree, node, _expansion(rng, b, k), f, f,
                                   f, jnp.asarray(rng.random(b) < 0.9))
        if i % 3 == 0:
            h = jnp.asarray(rng.integers(-3, 4, (b, k)) / 2, jnp.float32)
            tree = set_scores(tree, child, h, h)
        if i % 7 == 0:
            tree, _ = recycle(tree, jnp.asarray(rng.integers(0, 4, b)),
                              max_victims=4)
        if i % 11 == 0:
            # Close an OPEN node by hand, then refresh its block, as the
            # contract asks of code that changes status or f by hand.
            victim = jnp.asarray(_full_scan(tree)[0])
            nodes = tree.extra.replace(
                status=tree.extra.status.at[jnp.arange(b), victim].set(
                    CLOSED))
            tree = tree.replace(extra=refresh_selection(
                nodes, victim[:, None] // selection_block(n)))


def test_refresh_selection_after_raising_f_by_hand():
    tree = init_astar_tree(jnp.ones((2, 1), jnp.int32),
                           jnp.ones(2, jnp.int32), num_nodes=100,
                           max_step_tokens=1, max_children=1)
    status = np.full((2, 100), OPEN)
    f = np.zeros((2, 100), np.float32)
    f[0, 77], f[1, 3] = 5.0, 2.0
    nodes = tree.extra.replace(status=jnp.asarray(status),
                               f=jnp.asarray(f))
    tree = tree.replace(extra=refresh_selection(nodes))
    assert best_open_node(tree).tolist() == [77, 3]


def test_cached_victims_equal_ranking_all_slots():
    """recycle's victims read from the lowest-minimum blocks are those of a
    ranking of all N slots, with many tied f and a partial last block."""
    rng = np.random.default_rng(5)
    b, n, v = 16, 600, 6
    tree = init_astar_tree(jnp.ones((b, 1), jnp.int32),
                           jnp.ones(b, jnp.int32), num_nodes=n,
                           max_step_tokens=1, max_children=1)
    status = rng.choice([FREE, OPEN, CLOSED], (b, n), p=[0.1, 0.3, 0.6])
    f = rng.integers(-4, 4, (b, n)).astype(np.float32) / 2
    nodes = refresh_selection(tree.extra.replace(
        status=jnp.asarray(status, jnp.int32), f=jnp.asarray(f)))
    deficit = jnp.asarray(rng.integers(0, v + 1, b), jnp.int32)
    got, blocks, best, worst = _cached_victims(nodes, deficit, v)
    np.testing.assert_array_equal(got, _ranked_victims(nodes, deficit, v))
    # The candidate blocks' values once the victims are freed.
    freed = status.copy()
    for row, slots in enumerate(np.asarray(got)):
        freed[row, slots[slots < n]] = FREE
    exact = refresh_selection(nodes.replace(status=jnp.asarray(freed)))
    rows = np.arange(b)[:, None]
    np.testing.assert_array_equal(
        best, np.asarray(exact.block_best)[rows, np.asarray(blocks)])
    np.testing.assert_array_equal(
        worst, np.asarray(exact.block_worst)[rows, np.asarray(blocks)])


@pytest.mark.parametrize("num_nodes,expansions", [(1024, 170), (4096, 682),
                                                  (1024, 400)])
def test_search_at_large_n_equals_heapq_reference(num_nodes, expansions):
    """Every slot filled, or (1024 slots, 400 expansions) recycled often."""
    env = SyntheticEnv(seed=3, branching=6, max_depth=expansions + 1,
                       terminal_prob=0.0, invalid_prob=0.1)
    config = AStarConfig(num_nodes=num_nodes, max_expansions=expansions,
                         lam=1.0, aggregation="min")
    roots = [11, 12, 13]
    tree = env.init_tree(jnp.asarray(roots, jnp.int32), num_nodes=num_nodes)
    result = jax.jit(lambda t, k: astar_search(
        env.expand_fn, t, k, config=config))(
            tree, jax.random.split(jax.random.key(0), len(roots)))
    for b, root in enumerate(roots):
        ref = reference_astar(env, root, config)
        pops = int(result.num_pops[b])
        assert np.asarray(result.pop_order[b, :pops]).tolist() == \
            ref.pop_order
        assert int(result.stats.status[b]) == ref.status
        assert int(result.stats.recycled[b]) == ref.recycled
    if expansions * 6 > num_nodes:
        assert (np.asarray(result.stats.recycled) > 0).all()
