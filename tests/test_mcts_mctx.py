"""Our MCTS against DeepMind's mctx on the same deterministic table.

With 'enumerated' expansion (every action selectable, an unvisited action
expanded when selected), PUCT with mctx's constants and its
parent-and-siblings Q normalisation, the search equals `mctx.muzero_policy`
(Dirichlet noise off, temperature 0); with 'gumbel' selection it equals
`mctx.gumbel_muzero_policy` (Gumbel scale 0: our noise is drawn from our
keys, mctx's from its own). Both build node i in simulation i, so whole
trees are compared: parents, actions, visit counts, mean values.

Differences, each tested here or in test_mcts_features.py:
* mctx keeps a running mean per node, we keep value sums (mean = sum /
  visits): values agree to float rounding (checked to 1e-5 relative).
* mctx breaks exact score ties with 1e-7 uniform noise, we take the lowest
  edge; with temperature 0 mctx samples among equally visited root actions,
  we take the lowest. The chosen action is compared where the most visited
  root action is unique.
* mctx selects actions with -inf prior logits inside the tree; we never
  select an invalid edge (not exercised here: every action is valid).
"""

from __future__ import annotations

import functools

import jax
import mctx
import numpy as np
import pytest

from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.synthetic_mcts import ActionTableEnv

B = 24
CASES = [  # seed, actions, simulations, reward scale, discount
    (1, 4, 32, 0.0, 1.0), (2, 8, 48, 0.25, 1.0), (3, 6, 40, 0.5, 0.5)]


def _ours(env, config, roots, seed):
    tree = env.init_tree(roots, num_nodes=config.num_nodes)
    keys = jax.random.split(jax.random.key(seed), len(roots))
    search = jax.jit(functools.partial(run_mcts, env.propose_fn,
                                       env.evaluate_fn, config=config))
    return jax.tree.map(np.asarray, search(tree, keys))


def _compare(ours, theirs) -> None:
    mt = theirs.search_tree
    visits = np.asarray(mt.summary().visit_counts)
    np.testing.assert_array_equal(ours.root_visits, visits)
    np.testing.assert_array_equal(ours.tree.parent, np.asarray(mt.parents))
    np.testing.assert_array_equal(ours.tree.action_from_parent,
                                  np.asarray(mt.action_from_parent))
    np.testing.assert_array_equal(ours.tree.visit_count,
                                  np.asarray(mt.node_visits))
    np.testing.assert_array_equal(ours.tree.children_index,
                                  np.asarray(mt.children_index))
    mean = ours.tree.value_sum / np.maximum(ours.tree.visit_count, 1)
    np.testing.assert_allclose(mean, np.asarray(mt.node_values), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(ours.tree.extra.raw_value,
                                  np.asarray(mt.raw_values))
    unique = (visits == visits.max(1, keepdims=True)).sum(1) == 1
    assert unique.sum() >= B // 2
    np.testing.assert_array_equal(ours.root_action[unique],
                                  np.asarray(theirs.action)[unique])


@pytest.mark.parametrize("seed,actions,sims,reward_scale,discount", CASES)
def test_equals_muzero_policy(seed, actions, sims, reward_scale, discount):
    env = ActionTableEnv(seed=seed, num_actions=actions, levels=1 << 16,
                         reward_scale=reward_scale)
    roots = np.arange(B) * 31 + seed
    config = MCTSConfig(
        num_nodes=sims + 1, num_simulations=sims, max_depth=sims,
        expansion="enumerated", selection="puct", q_transform="min_max",
        discount=discount)
    ours = _ours(env, config, roots, seed)
    theirs = jax.jit(lambda key: mctx.muzero_policy(
        None, key, env.mctx_root(roots), env.mctx_recurrent_fn(discount),
        num_simulations=sims, dirichlet_fraction=0.0,
        temperature=0.0))(jax.random.key(seed))
    _compare(ours, theirs)
    assert ours.stats.max_depth.max() >= 3          # Not a flat search.


@pytest.mark.parametrize("seed,actions,sims,reward_scale,discount", CASES)
def test_equals_gumbel_muzero_policy(seed, actions, sims, reward_scale,
                                     discount):
    env = ActionTableEnv(seed=seed, num_actions=actions, levels=1 << 16,
                         reward_scale=reward_scale)
    roots = np.arange(B) * 17 + seed
    considered = max(2, actions // 2)
    config = MCTSConfig(
        num_nodes=sims + 1, num_simulations=sims, max_depth=sims,
        expansion="enumerated", selection="gumbel", gumbel_scale=0.0,
        max_considered=considered, discount=discount)
    ours = _ours(env, config, roots, seed)
    theirs = jax.jit(lambda key: mctx.gumbel_muzero_policy(
        None, key, env.mctx_root(roots), env.mctx_recurrent_fn(discount),
        num_simulations=sims, gumbel_scale=0.0,
        max_num_considered_actions=considered))(jax.random.key(seed))
    mt = theirs.search_tree
    np.testing.assert_array_equal(ours.tree.parent, np.asarray(mt.parents))
    np.testing.assert_array_equal(ours.tree.visit_count,
                                  np.asarray(mt.node_visits))
    np.testing.assert_array_equal(ours.root_visits,
                                  np.asarray(mt.summary().visit_counts))
    # Gumbel MuZero's action: the best considered action (no visit ties).
    np.testing.assert_array_equal(ours.root_action, np.asarray(theirs.action))


def test_bench_mcts_runs_and_both_engines_agree(tmp_path):
    """experiments/bench_mcts.py on tiny shapes: the JSON holds both pairs,
    compile times, the load average, and equal root visits in every row
    (no assertion on time)."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "experiments/bench_mcts.py", "--out",
                    str(out), "--batch", "4", "--actions", "3",
                    "--simulations", "8", "--repeats", "1"], cwd=root,
                   check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert len(report["machine"]["load_average_start"]) == 3
    assert [r["name"] for r in report["results"]] == [
        "puct_vs_muzero_policy", "gumbel_vs_gumbel_muzero_policy"]
    for r in report["results"]:
        assert r["root_visits_equal_rows"] == r["rows"] == 4
        assert r["compile_s"]["ours"] > 0 and r["ours"]["times_s"]
