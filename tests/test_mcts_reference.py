"""Batched MCTS (qstar_jax.search.mcts) against the plain-Python reference.

The property test runs 192 random synthetic instances in 16 static groups
(one compile and one batch per group) covering both expansion modes, the
three selection rules (and a different rule at the root, Gumbel noise on
and off), 1 or 3 parallel simulations, both Q transforms, state
merge, rewards with discounts, terminal / invalid / failing / NaN outcomes
and full trees, and checks that the jitted search builds the same tree
(topology, steps, visits, value sums, evaluations, importance, priors),
reports the same statistics and selects the same answers as
`reference_mcts`, node for node.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_types import DONE, FULL, MCTSConfig, MCTSStats
from qstar_jax.search.reference_mcts import reference_mcts
from qstar_jax.search.synthetic_mcts import ActionTableEnv
from qstar_jax.search.synthetic_options import OptionTableEnv

NUM_GROUPS = 16
ROWS_PER_GROUP = 12


@functools.lru_cache(maxsize=None)
def _group(index: int):
    """(env, config, C, roots) of one property-test group."""
    rng = np.random.default_rng(2000 + index)
    selection = ("ucb", "puct", "gumbel")[index % 3]
    parallel = (1, 3)[(index // 3) % 2]
    enumerated = (index // 6) % 2 == 1
    sims = parallel * int(rng.integers(5, 11))
    common = dict(
        num_simulations=sims, parallel=parallel, selection=selection,
        max_depth=int(rng.integers(3, 7)),
        q_transform=str(rng.choice(["raw", "min_max"])),
        c_ucb=float(rng.choice([0.5, 1.0, 1.5])),
        pb_c_init=float(rng.choice([1.25, 3.0])),
        max_considered=int(rng.integers(2, 5)),
        gumbel_scale=float(rng.choice([0.0, 1.0])),
        virtual_loss=int(rng.integers(1, 3)),
        virtual_value=float(rng.choice([0.0, -0.5])),
        nan_value=float(rng.choice([0.0, -1.0])),
        root_selection=(None, None, "ucb", "puct", "gumbel")[
            int(rng.integers(0, 5))])
    if enumerated:
        c = int(rng.integers(2, 5))
        env = ActionTableEnv(
            seed=int(rng.integers(0, 2 ** 31)), num_actions=c,
            reward_scale=float(rng.choice([0.0, 0.25])),
            terminal_prob=float(rng.choice([0.0, 0.15])),
            invalid_prob=float(rng.choice([0.0, 0.2])),
            fail_prob=float(rng.choice([0.0, 0.1])),
            nan_prob=float(rng.choice([0.0, 0.05])))
        config = MCTSConfig(
            num_nodes=int(rng.choice([sims + 1, sims // 2 + 2])),
            expansion="enumerated",
            discount=float(rng.choice([1.0, 0.5])), **common)
    else:
        c = int(rng.integers(3, 6))
        env = OptionTableEnv(
            seed=int(rng.integers(0, 2 ** 31)),
            num_candidates=int(rng.integers(1, 4)),
            max_step_tokens=int(rng.integers(1, 5)),
            vocab=int(rng.integers(2, 4)),
            terminal_depth=int(rng.integers(2, 6)),
            terminal_prob=float(rng.choice([0.0, 0.2])),
            invalid_prob=float(rng.choice([0.0, 0.3])),
            nan_prob=float(rng.choice([0.0, 0.05])))
        config = MCTSConfig(
            num_nodes=int(rng.choice([sims + 1, sims // 2 + 2])),
            expansion="widening", alpha=float(rng.choice([0.0, 1.0, 4.0])),
            c_min=(int(rng.integers(1, c + 1)), int(rng.integers(1, 3))),
            c_max=(c, int(rng.integers(1, c + 1))),
            merge_threshold=int(rng.choice([0, 1, 2])), **common)
    return env, config, c, rng.integers(0, 2 ** 31, ROWS_PER_GROUP)


def _tree(env, config, c, roots):
    if isinstance(env, ActionTableEnv):
        return env.init_tree(roots, num_nodes=config.num_nodes)
    return env.init_tree(roots, num_nodes=config.num_nodes, max_children=c)


@functools.lru_cache(maxsize=None)
def _group_result(index: int):
    env, config, c, roots = _group(index)
    keys = jax.random.split(jax.random.key(index), len(roots))
    search = jax.jit(functools.partial(run_mcts, env.propose_fn,
                                       env.evaluate_fn, config=config))
    result = jax.tree.map(np.asarray, search(_tree(env, config, c, roots),
                                             keys))
    split = jax.vmap(lambda key: jax.random.split(key, 3))(keys)
    gumbel = config.gumbel_scale * jax.vmap(lambda key: jax.random.gumbel(
        key, (c,), jnp.float32))(split[:, 1])         # the documented noise
    return result, np.asarray(gumbel)


def _assert_row_matches(result, b: int, ref) -> None:
    tree = result.tree
    num = int(tree.num_nodes[b])
    assert num == ref.num_nodes
    for name in ("parent", "action_from_parent", "depth", "terminal",
                 "visit_count", "value_sum"):
        assert getattr(tree, name)[b].tolist() == getattr(ref, name), name
    for name in ("raw_value", "outcome", "importance", "saturated"):
        assert getattr(tree.extra, name)[b].tolist() == getattr(ref, name), \
            name
    assert tree.children_index[b].tolist() == ref.children
    np.testing.assert_array_equal(tree.children_prior_logits[b],
                                  np.asarray(ref.priors, np.float32))
    for x in range(1, num):
        assert tuple(tree.step_tokens[b, x, :tree.step_lengths[b, x]]
                     .tolist()) == ref.tokens[x]
    for name in MCTSStats.__dataclass_fields__:
        assert int(getattr(result.stats, name)[b]) == ref.stats[name], name
    for name in ("root_action", "most_visited", "best_value",
                 "best_outcome"):
        assert int(getattr(result, name)[b]) == getattr(ref, name), name
    assert result.root_visits[b].tolist() == ref.root_visits
    assert np.isfinite(tree.value_sum[b]).all()


@pytest.mark.parametrize("index", range(NUM_GROUPS))
def test_matches_python_reference(index):
    env, config, c, roots = _group(index)
    result, gumbel = _group_result(index)
    for b, root in enumerate(roots):
        ref = reference_mcts(env, int(root), config, edges=c,
                             gumbel=gumbel[b])
        _assert_row_matches(result, b, ref)


def test_property_instances_cover_every_setting_and_rule():
    groups = [_group(i) for i in range(NUM_GROUPS)]
    assert NUM_GROUPS * ROWS_PER_GROUP >= 180
    configs = [g[1] for g in groups]
    assert {(c.expansion, c.selection, c.parallel) for c in configs} == {
        (e, s, p) for e in ("widening", "enumerated")
        for s in ("ucb", "puct", "gumbel") for p in (1, 3)}
    assert {c.q_transform for c in configs} == {"raw", "min_max"}
    assert any(c.root_rule != c.selection for c in configs)
    assert any(c.root_rule == "gumbel" and c.gumbel_scale > 0
               for c in configs)
    seen = {}
    for index in range(NUM_GROUPS):
        stats = _group_result(index)[0].stats
        for name in ("revisits", "collisions", "failed", "dropped",
                     "merge_rejected", "merge_fallbacks", "nan_count"):
            seen[name] = seen.get(name, 0) + int((getattr(stats, name)
                                                  > 0).sum())
        for status in (DONE, FULL):
            seen[status] = seen.get(status, 0) + int(
                (stats.status == status).sum())
    assert all(v > 0 for v in seen.values()), seen
