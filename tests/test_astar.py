"""Batched A* (qstar_jax.search.astar) against the heapq reference.

The property test runs 240 random synthetic instances in 20 static groups
(one compile and one batch per group) and checks that the jitted search pops
the same nodes in the same order, finds the same trajectories with the same
steps and f, builds the same tree and reports the same statistics as the
plain-Python reference. The other tests are small hand-worked cases.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qstar_jax.search.astar import (AGGREGATIONS, BUDGET, EXHAUSTED, FULL,
                                    SOLVED, WORST, AStarConfig,
                                    aggregate_reward, astar_search, priority,
                                    shrink_schedule, shrink_widths)
from qstar_jax.search.astar_tree import (CLOSED, FREE, OPEN, add_children,
                                         best_open_node, init_astar_tree,
                                         recycle)
from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.reference_astar import (aggregate_reward_py,
                                              priority_py, reference_astar)
from qstar_jax.search.synthetic import SyntheticEnv, TableEnv
from qstar_jax.search.tree import (Tree, path_nodes, state_tokens,
                                   trajectory_steps)

NUM_GROUPS = 20
ROWS_PER_GROUP = 12


@functools.lru_cache(maxsize=None)
def _jitted_search(expand_fn, config: AStarConfig, lookahead_fn=None):
    return jax.jit(functools.partial(astar_search, expand_fn, config=config,
                                     lookahead_fn=lookahead_fn))


def _run(env, config: AStarConfig, roots, seed: int = 0):
    tree = env.init_tree(roots, num_nodes=config.num_nodes)
    keys = jax.random.split(jax.random.key(seed), len(roots))
    look = env.lookahead_fn if config.heuristic == "lookahead" else None
    result = _jitted_search(env.expand_fn, config, look)(tree, keys)
    return jax.tree.map(np.asarray, result)


@functools.lru_cache(maxsize=None)
def _group(index: int) -> tuple[SyntheticEnv, AStarConfig, np.ndarray]:
    """Static settings and root states of one property-test group."""
    rng = np.random.default_rng(1000 + index)
    aggregation = AGGREGATIONS[index % len(AGGREGATIONS)]
    heuristic = ("edge", "lookahead")[(index // 5) % 2]
    num_trajectories = (1, 3)[index // 10]
    k = int(rng.integers(2, 5))
    env = SyntheticEnv(
        seed=int(rng.integers(0, 2 ** 31)), branching=k,
        max_depth=int(rng.integers(2, 7)),
        terminal_prob=float(rng.choice([0.0, 0.1, 0.3])),
        invalid_prob=float(rng.choice([0.0, 0.2, 0.4])),
        nan_prob=float(rng.choice([0.0, 0.0, 0.05])),
        levels=int(rng.choice([4, 8])))
    max_expansions = int(rng.integers(3, 41))
    ample = 1 + max_expansions * k
    num_nodes = int(rng.choice([ample, rng.integers(k + 1, 4 * k),
                                rng.integers(4 * k, ample // 2 + 4 * k)]))
    config = AStarConfig(
        num_nodes=num_nodes, max_expansions=max_expansions,
        num_trajectories=num_trajectories,
        lam=float(rng.choice([0.0, 0.25, 0.5, 1.0, 2.0])),
        aggregation=aggregation, heuristic=heuristic,
        when_full=str(rng.choice(["recycle", "stop"])))
    roots = rng.integers(0, 2 ** 31, ROWS_PER_GROUP)
    return env, config, roots


def _assert_row_matches(result, b: int, ref) -> None:
    """Row b of a JAX SearchResult equals a ReferenceResult."""
    stats = result.stats
    pops = result.pop_order[b, :result.num_pops[b]].tolist()
    assert pops == ref.pop_order
    assert (result.pop_order[b, result.num_pops[b]:] == -1).all()
    found = result.trajectories[b, :result.num_found[b]].tolist()
    assert found == ref.trajectories
    assert result.trajectory_f[b, :len(found)].tolist() == ref.trajectory_f
    for node in found:
        assert trajectory_steps(result.tree, b, node) == ref.steps(node)
    assert int(result.best[b]) == ref.best
    for name in ("status", "expansions", "generated_tokens", "model_calls",
                 "max_depth", "nan_count", "dropped", "recycled"):
        assert int(getattr(stats, name)[b]) == getattr(ref, name), name
    tree = result.tree
    for name in ("parent", "action_from_parent", "depth", "terminal",
                 "num_nodes"):
        assert getattr(tree, name)[b].tolist() == getattr(ref, name), name
    for name in ("g", "h", "f"):
        assert getattr(tree.extra, name)[b].tolist() == getattr(ref, name), \
            name
    assert tree.extra.status[b].tolist() == ref.node_status
    assert np.isfinite(tree.extra.g[b]).all()
    assert np.isfinite(tree.extra.f[b]).all()
    _assert_children_index_matches_parents(tree, b, ref.node_status)


def _assert_children_index_matches_parents(tree, b: int, status) -> None:
    """children_index of row b lists exactly the non-FREE non-root nodes,
    each at its parent's edge action_from_parent."""
    edges = {(int(p), int(c)): int(x) for p in range(tree.capacity)
             for c, x in enumerate(tree.children_index[b, p]) if x >= 0}
    nodes = {(int(tree.parent[b, x]), int(tree.action_from_parent[b, x])): x
             for x in range(1, tree.capacity) if status[x] != FREE}
    assert edges == nodes


@functools.lru_cache(maxsize=None)
def _group_result(index: int):
    """The batched search of one group (run once, shared by two tests)."""
    return _run(*_group(index))


@pytest.mark.parametrize("index", range(NUM_GROUPS))
def test_matches_heapq_reference(index):
    env, config, roots = _group(index)
    result = _group_result(index)
    for b, root in enumerate(roots):
        _assert_row_matches(result, b, reference_astar(env, int(root),
                                                       config))


@pytest.mark.parametrize("index", [0, 7, 13])
def test_shrinking_batch_matches_reference_and_full_batch(index):
    env, config, roots = _group(index)
    shrunk = _run(env, dataclasses.replace(config, shrink_rows=2), roots)
    for b, root in enumerate(roots):
        _assert_row_matches(shrunk, b, reference_astar(env, int(root),
                                                       config))
    full = _group_result(index)
    for x, y in zip(jax.tree.leaves(shrunk), jax.tree.leaves(full)):
        np.testing.assert_array_equal(x, y)


def test_shrinking_batch_keeps_each_row_with_its_key():
    env = SyntheticEnv(seed=5, branching=3, max_depth=5, invalid_prob=0.1)
    config = AStarConfig(num_nodes=64, max_expansions=12, lam=0.5,
                         aggregation="sum")
    noisy_expand = _key_dependent_expand(env)

    roots = np.arange(16) * 7 + 1
    keys = jax.random.split(jax.random.key(3), 16)
    tree = env.init_tree(roots, num_nodes=64)
    full = _jitted_search(noisy_expand, config)(tree, keys)
    shrunk = _jitted_search(noisy_expand, dataclasses.replace(
        config, shrink_rows=1))(tree, keys)
    expansions = np.asarray(full.stats.expansions)
    assert len(set(expansions.tolist())) > 1     # rows finish apart
    for x, y in zip(jax.tree.leaves(shrunk), jax.tree.leaves(full)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_shrink_widths_ladder():
    assert shrink_widths(64, 8, 0.5) == [64, 32, 16, 8]
    assert shrink_widths(64, 8, 2 / 3) == [64, 43, 29, 20, 14, 10, 8]
    assert shrink_widths(64, 64, 0.5) == [64]
    assert shrink_widths(5, 1, 0.5) == [5, 3, 2, 1]
    assert shrink_schedule([1, 2, 2, 5], [4, 2, 1]) == [4, 4, 1, 1, 1]
    with pytest.raises(ValueError, match="shrink_ratio"):
        AStarConfig(shrink_ratio=1.0)


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_rows_leave_the_batch_in_the_iteration_they_end(ratio):
    """A row ends in the iteration of its last expansion (its terminal pop
    or its budget stop is taken at once), so a shrinking batch drops it
    before the next model call; results equal the full batch's."""
    env = SyntheticEnv(seed=5, branching=3, max_depth=5, invalid_prob=0.1)
    config = AStarConfig(num_nodes=64, max_expansions=12, lam=0.5,
                         aggregation="sum", shrink_rows=1,
                         shrink_ratio=ratio)
    noisy_expand = _key_dependent_expand(env)
    widths = []

    def recording_expand(tree, node, keys):
        b = tree.batch_size
        jax.debug.callback(lambda: widths.append(b))
        return noisy_expand(tree, node, keys)

    roots = np.arange(16) * 7 + 1
    keys = jax.random.split(jax.random.key(3), 16)
    tree = env.init_tree(roots, num_nodes=64)
    shrunk = jax.block_until_ready(
        _jitted_search(recording_expand, config)(tree, keys))
    full = _jitted_search(noisy_expand, dataclasses.replace(
        config, shrink_rows=0))(tree, keys)
    for x, y in zip(jax.tree.leaves(shrunk), jax.tree.leaves(full)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    expansions = np.asarray(full.stats.expansions)
    assert len(set(expansions.tolist())) > 2
    assert widths == shrink_schedule(expansions,
                                     shrink_widths(16, 1, ratio))


def test_property_instances_cover_every_setting_and_rule():
    groups = [_group(i) for i in range(NUM_GROUPS)]
    assert NUM_GROUPS * ROWS_PER_GROUP >= 200
    configs = [c for _, c, _ in groups]
    assert {c.aggregation for c in configs} == set(AGGREGATIONS)
    assert {(c.heuristic, c.num_trajectories, c.when_full)
            for c in configs} >= {("edge", 1, "recycle"),
                                  ("lookahead", 3, "stop")}
    assert {e.branching for e, _, _ in groups} == {2, 3, 4}
    assert {e.max_depth for e, _, _ in groups} >= {2, 6}
    seen = np.zeros(8, int)
    for index in range(NUM_GROUPS):
        result = _group_result(index)
        stats = result.stats
        seen += [(stats.status == s).sum() for s in (SOLVED, BUDGET,
                                                     EXHAUSTED, FULL)] + [
            (stats.recycled > 0).sum(), (stats.dropped > 0).sum(),
            (stats.nan_count > 0).sum(), (result.num_found > 1).sum()]
    assert (seen > 0).all(), seen


def test_python_and_jax_tables_agree_bit_for_bit():
    rng = np.random.default_rng(7)
    for env in (SyntheticEnv(seed=1, branching=3, nan_prob=0.2),
                SyntheticEnv(seed=2 ** 31 - 5, branching=5, max_depth=2,
                             terminal_prob=0.5, invalid_prob=0.5, levels=4)):
        states = rng.integers(0, 2 ** 31, 64)
        depths = rng.integers(0, env.max_depth, 64)
        table = jax.tree.map(np.asarray, env.table(jnp.asarray(
            states, jnp.int32), jnp.asarray(depths, jnp.int32)))
        for i, (s, d) in enumerate(zip(states, depths)):
            for a, child in enumerate(env.expand(int(s), int(d)).children):
                assert child.state == table["child"][i, a]
                assert child.valid == table["valid"][i, a]
                assert child.terminal == table["terminal"][i, a]
                assert child.log_prob == table["log_prob"][i, a]
                for name in ("reward", "q_value"):
                    py, jx = getattr(child, name), table[name][i, a]
                    assert (math.isnan(py) and np.isnan(jx)) or py == jx


def _key_dependent_expand(env: SyntheticEnv):
    """env's expansion with Q values that depend on each row's key."""

    def noisy_expand(tree, node, keys):
        out = env.expand_fn(tree, node, keys)
        noise = jax.vmap(lambda key: jax.random.randint(
            key, (env.branching,), -4, 5))(keys)
        return out._replace(q_value=out.q_value + noise / 8)

    return noisy_expand


def test_batch_independence_with_key_dependent_model():
    env = SyntheticEnv(seed=5, branching=3, max_depth=5, invalid_prob=0.1)
    config = AStarConfig(num_nodes=64, max_expansions=12, num_trajectories=2,
                         lam=0.5, aggregation="sum")
    noisy_expand = _key_dependent_expand(env)

    roots = np.array([11, 22, 33, 44, 55])
    keys = jax.random.split(jax.random.key(3), 5)
    batch = _jitted_search(noisy_expand, config)(
        env.init_tree(roots, num_nodes=64), keys)
    alone = _jitted_search(noisy_expand, config)(
        env.init_tree(roots[3:4], num_nodes=64), keys[3:4])
    row = jax.tree.map(lambda x: np.asarray(x)[3:4], batch)
    for x, y in zip(jax.tree.leaves(row), jax.tree.leaves(alone)):
        np.testing.assert_array_equal(x, np.asarray(y))
    other = _jitted_search(noisy_expand, config)(
        env.init_tree(roots[3:4], num_nodes=64), keys[2:3])
    assert not np.array_equal(other.tree.extra.f, alone.tree.extra.f)


def _table_search(env: TableEnv, config: AStarConfig):
    result = _jitted_search(env.expand_fn, config)(
        env.init_tree(1, num_nodes=config.num_nodes),
        jax.random.split(jax.random.key(0), 1))
    return jax.tree.map(np.asarray, result)


def test_greedy_fails_where_astar_with_min_prm_backtracks():
    # States: 0 root; 1 likely but leads only to bad steps; 3, 4 wrong
    # answers; 2 less likely, leads to 5, the correct answer.
    x = -1
    env = TableEnv(
        child=[[1, 2], [3, 4], [5, x], [x, x], [x, x], [x, x]],
        reward=[[.875, .625], [-.875, -.75], [.75, 0], [0, 0], [0, 0],
                [0, 0]],
        q_value=[[.875, .625], [.5, 0], [.75, 0], [0, 0], [0, 0], [0, 0]],
        log_prob=[[-.125, -1], [-.125, -2], [-.25, 0], [0, 0], [0, 0],
                  [0, 0]],
        terminal=[False, False, False, True, True, True])
    assert env.greedy(env.log_prob) == 3          # Wrong answer.
    assert env.greedy(env.q_value) == 3           # Wrong answer.
    config = AStarConfig(num_nodes=16, max_expansions=8, lam=1.0,
                         aggregation="min")
    result = _table_search(env, config)
    steps = trajectory_steps(result.tree, 0, int(result.best[0]))
    assert steps == [[2], [5]]                    # The correct answer.
    assert result.stats.status[0] == SOLVED
    # Root, the likely state 1 (slot 1), then back to state 2 (slot 2) and
    # its child, the answer (slot 5).
    assert result.pop_order[0, :result.num_pops[0]].tolist() == [0, 1, 2, 5]
    assert result.trajectory_f[0, 0] == .625 + .75
    ref = reference_astar(env, 0, config)
    _assert_row_matches(result, 0, ref)


def _recycle_env() -> TableEnv:
    """Root -> A (.5), B (.25), C (.25); A -> D (.75, terminal), invalid."""
    x = -1
    return TableEnv(
        child=[[1, 2, 3], [4, x, x], [x, x, x], [x, x, x], [x, x, x]],
        reward=[[.5, .25, .25], [.75, 0, 0], [0] * 3, [0] * 3, [0] * 3],
        q_value=np.zeros((5, 3)), log_prob=np.zeros((5, 3)),
        terminal=[False, False, False, False, True])


def test_when_full_recycle_frees_lowest_f_highest_index():
    env = _recycle_env()
    config = AStarConfig(num_nodes=4, max_expansions=5, lam=0.0,
                         aggregation="last", when_full="recycle")
    result = _table_search(env, config)
    tree = result.tree
    # B (slot 2) and C (slot 3) tie at f = .25: C, the higher index, goes;
    # D takes slot 3 and is popped next.
    assert tree.parent[0].tolist() == [-1, 0, 0, 1]
    assert tree.step_tokens[0, :, 0].tolist() == [0, 1, 2, 4]
    assert tree.extra.status[0].tolist() == [CLOSED, CLOSED, OPEN, CLOSED]
    # The victim C's edge now leads to nothing; D is A's edge 0.
    assert tree.children_index[0, 0].tolist() == [1, 2, -1]
    assert tree.children_index[0, 1].tolist() == [3, -1, -1]
    assert result.pop_order[0, :3].tolist() == [0, 1, 3]
    assert result.trajectories[0].tolist() == [3]
    assert result.stats.recycled[0] == 1 and result.stats.dropped[0] == 0
    assert result.stats.status[0] == SOLVED
    _assert_row_matches(result, 0, reference_astar(env, 0, config))


def test_recycle_standalone_resets_victims_and_reuses_their_slots():
    tree = init_astar_tree(jnp.ones((1, 1), jnp.int32),
                           jnp.ones(1, jnp.int32), num_nodes=5,
                           max_step_tokens=1, max_children=4)
    four = _expansion(np.arange(4).reshape(1, 4, 1) + 1, np.ones((1, 4)),
                      [[True] * 4])
    f = jnp.asarray([[.5, .25, .25, .75]])
    tree, _ = add_children(tree, jnp.zeros(1, jnp.int32), four, f, f, f,
                           jnp.ones(1, bool))
    tree = tree.replace(extra=tree.extra.replace(
        status=tree.extra.status.at[0, 0].set(CLOSED)))
    tree, freed = recycle(tree, jnp.asarray([2]), max_victims=3)
    assert freed.tolist() == [2]                   # Slots 3, then 2.
    assert tree.extra.status[0].tolist() == [CLOSED, OPEN, FREE, FREE, OPEN]
    assert tree.parent[0].tolist() == [-1, 0, -1, -1, 0]
    assert tree.action_from_parent[0].tolist() == [-1, 0, -1, -1, 3]
    assert tree.children_index[0, 0].tolist() == [1, -1, -1, 4]
    assert tree.extra.f[0].tolist() == [0, .5, 0, 0, .75]
    assert tree.extra.num_free.tolist() == [2]
    assert tree.num_nodes.tolist() == [5]
    two = _expansion(np.full((1, 2, 1), 9), np.ones((1, 2)), [[True] * 2])
    tree, child = add_children(tree, jnp.asarray([4]), two, f[:, :2],
                               f[:, :2], f[:, :2], jnp.ones(1, bool))
    assert child.tolist() == [[2, 3]]
    assert tree.extra.num_free.tolist() == [0]
    assert tree.depth[0].tolist() == [0, 1, 2, 2, 1]
    assert tree.children_index[0, 4].tolist() == [2, 3, -1, -1]


def test_when_full_stop_finishes_row_with_full():
    env = _recycle_env()
    config = AStarConfig(num_nodes=4, max_expansions=5, lam=0.0,
                         aggregation="last", when_full="stop")
    result = _table_search(env, config)
    assert result.stats.status[0] == FULL
    assert result.stats.dropped[0] == 1 and result.num_found[0] == 0
    assert result.best[0] == -1
    assert result.tree.extra.status[0].tolist() == [CLOSED, CLOSED, OPEN,
                                                    OPEN]
    _assert_row_matches(result, 0, reference_astar(env, 0, config))


def test_nan_reward_is_counted_ranked_last_and_not_propagated():
    # Root -> X (reward NaN, q 1) and Y (-.5, q -1); Y -> Z (terminal);
    # X -> W (terminal): W inherits g = WORST through 'min'.
    x, nan = -1, math.nan
    env = TableEnv(
        child=[[1, 2], [4, x], [3, x], [x, x], [x, x]],
        reward=[[nan, -.5], [.5, 0], [.5, 0], [0, 0], [0, 0]],
        q_value=[[1, -1], [.25, 0], [.25, 0], [0, 0], [0, 0]],
        log_prob=np.zeros((5, 2)), terminal=[False, False, False, True, True])
    config = AStarConfig(num_nodes=8, max_expansions=5, num_trajectories=2,
                         lam=1.0, aggregation="min")
    result = _table_search(env, config)
    tree = result.tree
    assert result.stats.nan_count[0] == 1
    assert tree.extra.f[0, 1] == WORST and tree.extra.g[0, 1] == WORST
    assert np.isfinite(tree.extra.g).all()
    assert np.isfinite(tree.extra.f).all()
    # Y (slot 2), then Z (slot 3); only then X, and X's child W (slot 4).
    assert result.pop_order[0, :5].tolist() == [0, 2, 3, 1, 4]
    assert result.trajectory_f[0].tolist() == [-.5 + .25, WORST]
    assert result.best[0] == 3 and result.stats.status[0] == SOLVED
    _assert_row_matches(result, 0, reference_astar(env, 0, config))


def test_budget_and_exhausted_statuses():
    env = SyntheticEnv(seed=9, branching=2, max_depth=6, invalid_prob=0.0,
                       terminal_prob=0.0)
    config = AStarConfig(num_nodes=64, max_expansions=4, lam=1.0)
    result = _run(env, config, [1, 2])
    assert (result.stats.status == BUDGET).all()
    assert (result.stats.expansions == 4).all()
    dead = SyntheticEnv(seed=9, branching=2, invalid_prob=1.0)
    result = _run(dead, config, [1, 2])
    assert (result.stats.status == EXHAUSTED).all()
    assert (result.stats.expansions == 1).all()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(AGGREGATIONS), st.booleans(),
       st.lists(st.sampled_from([-1, -.5, -.125, 0, .375, 1, WORST]),
                min_size=1, max_size=1),
       st.lists(st.sampled_from([-1, -.25, 0, .5, 1, math.nan, math.inf,
                                 -math.inf]), min_size=3, max_size=3),
       st.lists(st.sampled_from([-.75, 0, .125, math.nan, -math.inf]),
                min_size=3, max_size=3),
       st.sampled_from([0.0, 0.25, 1.0, 2.0]))
def test_aggregation_and_priority_match_python(agg, from_root, parent_g,
                                               reward, h, lam):
    g, r_bad = aggregate_reward(agg, jnp.asarray(parent_g, jnp.float32),
                                jnp.asarray([from_root]),
                                jnp.asarray([reward], jnp.float32))
    f, h_s, h_bad = priority(g, jnp.asarray([h], jnp.float32), lam, r_bad)
    for k in range(3):
        g_py, bad_py = aggregate_reward_py(agg, parent_g[0], from_root,
                                           reward[k])
        f_py, h_py, hb_py = priority_py(g_py, h[k], lam, bad_py)
        assert (float(g[0, k]), bool(r_bad[0, k])) == (g_py, bad_py)
        assert (float(f[0, k]), float(h_s[0, k]), bool(h_bad[0, k])) == (
            f_py, h_py, hb_py)


def test_aggregations_hand_computed():
    parent = jnp.asarray([.5, .5], jnp.float32)
    from_root = jnp.asarray([False, True])
    reward = jnp.asarray([[.25, .75, math.nan]] * 2, jnp.float32)
    expected = {
        "min": [[.25, .5, WORST], [.25, .75, WORST]],
        "max": [[.5, .75, .5], [.25, .75, WORST]],
        "sum": [[.75, 1.25, WORST], [.25, .75, WORST]],
        "last": [[.25, .75, WORST], [.25, .75, WORST]],
        "none": [[0, 0, 0], [0, 0, 0]]}
    for agg, want in expected.items():
        g, bad = aggregate_reward(agg, parent, from_root, reward)
        np.testing.assert_array_equal(g, np.asarray(want, np.float32))
        assert bad[:, 2].all() == (agg != "none") and not bad[:, :2].any()
        f, _, _ = priority(g, jnp.zeros((2, 3)), 1.0, bad)
        if agg != "none":                        # NaN reward: ranked last.
            assert (f[:, 2] == WORST).all() and (f[:, :2] == g[:, :2]).all()
    g, _ = aggregate_reward("sum", jnp.asarray([WORST], jnp.float32),
                            jnp.asarray([False]),
                            jnp.asarray([[1.0]], jnp.float32))
    assert float(g[0, 0]) == WORST             # Poison snaps, exactly.
    f, h, bad = priority(jnp.asarray([[.5, .5, .5]]),
                         jnp.asarray([[.25, -.5, math.inf]]), 2.0,
                         jnp.zeros((1, 3), bool))
    np.testing.assert_array_equal(f, [[1.0, -.5, WORST]])
    np.testing.assert_array_equal(h, [[.25, -.5, WORST]])
    assert bad.tolist() == [[False, False, True]]


def _expansion(tokens, lengths, valid) -> Expansion:
    """An Expansion with the given steps and zero scores."""
    zeros = jnp.zeros(np.shape(valid))
    return Expansion(
        step_tokens=jnp.asarray(tokens), step_lengths=jnp.asarray(lengths),
        valid=jnp.asarray(valid), terminal=zeros > 0, log_probs=zeros,
        reward=zeros, q_value=zeros,
        generated_tokens=jnp.zeros(len(valid), jnp.int32))


def test_state_tokens_and_path_match_python():
    rng = np.random.default_rng(0)
    rows, k, t = 3, 3, 3
    tree = init_astar_tree(rng.integers(1, 99, (rows, 4)),
                           rng.integers(1, 5, rows), num_nodes=24,
                           max_step_tokens=t, max_children=k)
    for _ in range(7):          # Random parents, variable-length steps.
        parent = [rng.integers(0, int(m)) for m in tree.num_nodes]
        expansion = _expansion(rng.integers(100, 999, (rows, k, t)),
                               rng.integers(0, t + 1, (rows, k)),
                               rng.random((rows, k)) < .8)
        zeros = jnp.zeros((rows, k))
        tree, _ = add_children(tree, jnp.asarray(parent), expansion, zeros,
                               zeros, zeros, jnp.ones(rows, bool))
    host = jax.tree.map(np.asarray, tree)
    assert (host.extra.status[:, :host.num_nodes.min()] != FREE).all()
    get_state = jax.jit(state_tokens, static_argnums=2)
    get_path = jax.jit(path_nodes, static_argnums=2)
    overflow = set()
    for width in (40, 9):
        for node in range(int(host.num_nodes.min())):
            nodes = jnp.full((rows,), node, jnp.int32)
            out = jax.tree.map(np.asarray, get_state(tree, nodes, width))
            paths = np.asarray(get_path(tree, nodes, 8))
            for b in range(rows):
                prompt = host.prompt_tokens[b, :host.prompt_lengths[b]]
                full = prompt.tolist() + sum(
                    trajectory_steps(host, b, node), [])
                assert out.tokens[b].tolist() == (
                    full + [0] * width)[:width]
                assert int(out.lengths[b]) == min(len(full), width)
                assert bool(out.overflow[b]) == (len(full) > width)
                overflow.add(bool(out.overflow[b]))
                path, cur = [], node
                while cur >= 0:
                    path.append(cur)
                    cur = int(host.parent[b, cur])
                assert paths[b].tolist() == (path[::-1] + [-1] * 9)[:9]
    assert overflow == {False, True}


def test_add_children_fills_slots_in_creation_order():
    tree = init_astar_tree(jnp.ones((2, 1), jnp.int32),
                           jnp.ones(2, jnp.int32), num_nodes=5,
                           max_step_tokens=1, max_children=3)
    expansion = _expansion(np.arange(6).reshape(2, 3, 1), np.ones((2, 3)),
                           [[True, False, True], [True, True, True]])
    zeros = jnp.zeros((2, 3))
    tree, child = add_children(tree, jnp.zeros(2, jnp.int32), expansion,
                               zeros, zeros, zeros, jnp.asarray([True, False]))
    assert child.tolist() == [[1, -1, 2], [-1, -1, -1]]
    assert tree.num_nodes.tolist() == [3, 1]
    tree, child = add_children(tree, jnp.asarray([2, 0]), expansion, zeros,
                               zeros, zeros, jnp.ones(2, bool))
    assert child.tolist() == [[3, -1, 4], [1, 2, 3]]
    assert tree.depth[0].tolist() == [0, 1, 1, 2, 2]
    tree, child = add_children(tree, jnp.asarray([3, 0]), expansion, zeros,
                               zeros, zeros, jnp.ones(2, bool))
    assert child.tolist() == [[-1, -1, -1], [4, -1, -1]]  # No room left.
    assert tree.children_index[0, 2].tolist() == [3, -1, 4]
    assert tree.action_from_parent[0].tolist() == [-1, 0, 2, 0, 2]


@pytest.mark.parametrize("block", [1, 8, 128])
def test_best_open_node_is_largest_f_then_lowest_index(block):
    rng = np.random.default_rng(block)
    status = rng.integers(0, 3, (16, 45))
    status[3] = CLOSED                            # A row without OPEN nodes.
    f = rng.integers(-2, 3, (16, 45)) / 2         # Many ties.
    tree = init_astar_tree(jnp.ones((16, 1), jnp.int32),
                           jnp.ones(16, jnp.int32), num_nodes=45,
                           max_step_tokens=1, max_children=1)
    tree = tree.replace(extra=tree.extra.replace(
        status=jnp.asarray(status, jnp.int32),
        f=jnp.asarray(f, jnp.float32)))
    node = np.asarray(jax.jit(best_open_node, static_argnums=1)(tree, block))
    for b in range(16):
        if (status[b] == OPEN).any():
            assert node[b] == np.argmax(np.where(status[b] == OPEN, f[b],
                                                 -np.inf))
        else:
            assert status[b, node[b]] != OPEN


def test_config_validation():
    with pytest.raises(ValueError):
        AStarConfig(aggregation="mean")
    with pytest.raises(ValueError):
        AStarConfig(heuristic="rollout")
    with pytest.raises(ValueError):
        AStarConfig(when_full="grow")
    with pytest.raises(ValueError, match="shrink_rows"):
        AStarConfig(shrink_rows=-1)
    env = SyntheticEnv()
    with pytest.raises(ValueError, match="slots"):
        astar_search(env.expand_fn, env.init_tree([1], num_nodes=8),
                     jax.random.split(jax.random.key(0), 1),
                     config=AStarConfig(num_nodes=16))
    with pytest.raises(ValueError, match="edges per node"):
        narrow = env.init_tree([1], num_nodes=16)
        astar_search(env.expand_fn, narrow.replace(
            children_index=narrow.children_index[:, :, :1],
            children_prior_logits=narrow.children_prior_logits[:, :, :1]),
            jax.random.split(jax.random.key(0), 1),
            config=AStarConfig(num_nodes=16))
    with pytest.raises(ValueError, match="lookahead_fn"):
        astar_search(env.expand_fn, env.init_tree([1], num_nodes=16),
                     jax.random.split(jax.random.key(0), 1),
                     config=AStarConfig(num_nodes=16, heuristic="lookahead"))
    assert Tree.ROOT == 0 and Tree.NO_PARENT == -1
