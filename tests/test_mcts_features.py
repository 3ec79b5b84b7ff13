"""MCTS features on small trees worked out by hand.

`Scripted` is a table environment: state 0 is the root, edge c of state s
leads to state child[s, c] (whatever candidate is kept), and the R
candidate options of that edge are given token strings.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.search.edit_distance import edit_distance
from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_answers import weighted_vote
from qstar_jax.search.mcts_interfaces import Evaluation, Options
from qstar_jax.search.mcts_select import allowed_width, considered_visits
from qstar_jax.search.mcts_types import DONE, FULL, MCTSConfig
from qstar_jax.search.reference_mcts import levenshtein
from qstar_jax.search.tree import init_tree, node_values, path_nodes

NAN = math.nan


class Scripted:
    """Explicit tables ([S, C] per edge, [S] per state; see the module
    docstring). `tokens[s][c]` lists the R candidate token tuples of edge c
    of state s (default: the single candidate (child,))."""

    def __init__(self, child, value, *, outcome=None, priors=None,
                 reward=None, terminal=None, tokens=None, depth=4):
        self.child = np.asarray(child, np.int32)
        s, c = self.child.shape
        self.value = np.asarray(value, np.float32)
        self.outcome = np.asarray(self.value if outcome is None else outcome,
                                  np.float32)
        self.priors = None if priors is None else np.asarray(priors,
                                                             np.float32)
        self.reward = np.zeros((s, c), np.float32) if reward is None else \
            np.asarray(reward, np.float32)
        self.terminal = np.zeros(s, bool) if terminal is None else \
            np.asarray(terminal, bool)
        tokens = tokens or {}
        r = max([len(v) for row in tokens.values() for v in row.values()]
                + [1])
        t = max([len(x) for row in tokens.values() for v in row.values()
                 for x in v] + [1])
        self.tokens = np.zeros((s, c, r, t), np.int32)
        self.lengths = np.zeros((s, c, r), np.int32)
        for i in range(s):
            for e in range(c):
                cands = tokens.get(i, {}).get(e, [(int(self.child[i, e]),)])
                for k, cand in enumerate(cands):
                    self.tokens[i, e, k, :len(cand)] = cand
                    self.lengths[i, e, k] = len(cand)
        self.depth = depth

    def state(self, tree, nodes):
        paths = jax.vmap(lambda x: path_nodes(tree, x, self.depth),
                         in_axes=1, out_axes=1)(nodes)
        edges = node_values(tree.action_from_parent, paths)
        child = jnp.asarray(self.child)
        state = jnp.zeros(nodes.shape, jnp.int32)
        for d in range(1, self.depth + 1):
            nxt = child[state, jnp.maximum(edges[..., d], 0)]
            state = jnp.where(paths[..., d] >= 0, nxt, state)
        return state

    def propose_fn(self, tree, parents, edges, keys):
        del keys
        s = self.state(tree, parents)
        lengths = jnp.asarray(self.lengths)[s, edges]
        r = lengths.shape[-1]
        child = jnp.asarray(self.child)[s, edges]

        def per_candidate(x):
            return jnp.broadcast_to(x[..., None], x.shape + (r,))

        return Options(
            step_tokens=jnp.asarray(self.tokens)[s, edges],
            step_lengths=lengths, prior_logits=-lengths.astype(jnp.float32),
            valid=lengths > 0,
            terminal=per_candidate(jnp.asarray(self.terminal)[child]),
            reward=per_candidate(jnp.asarray(self.reward)[s, edges]),
            generated_tokens=jnp.sum(lengths, axis=-1))

    def evaluate_fn(self, tree, nodes, keys):
        del keys
        s = self.state(tree, nodes)
        return Evaluation(
            value=jnp.asarray(self.value)[s],
            outcome=jnp.asarray(self.outcome)[s],
            prior_logits=None if self.priors is None else jnp.asarray(
                self.priors)[s],
            generated_tokens=jnp.zeros(nodes.shape, jnp.int32))

    def run(self, config: MCTSConfig, rows: int = 1):
        c, t = self.child.shape[1], self.tokens.shape[-1]
        tree = init_tree(jnp.zeros((rows, 1), jnp.int32),
                         jnp.ones(rows, jnp.int32),
                         num_nodes=config.num_nodes, max_step_tokens=t,
                         max_children=c)
        search = jax.jit(functools.partial(
            run_mcts, self.propose_fn, self.evaluate_fn, config=config))
        keys = jax.random.split(jax.random.key(0), rows)
        return jax.tree.map(np.asarray, search(tree, keys))


def _steps(result, nodes):
    tree = result.tree
    return [tuple(tree.step_tokens[0, x, :tree.step_lengths[0, x]].tolist())
            for x in nodes]


def test_allowed_width_is_table5_formula():
    config = MCTSConfig(alpha=1.0, c_min=(10, 2), c_max=(60, 10))
    depth = jnp.asarray([0, 0, 0, 1, 1, 1, 5])
    importance = jnp.asarray([0.0, 25.3, 100.0, 0.0, 3.7, 50.0, 3.7])
    assert allowed_width(depth, importance, config).tolist() == [
        10, 26, 60, 2, 4, 10, 4]
    fixed = MCTSConfig(alpha=0.0, c_min=(10, 2), c_max=(60, 10))
    assert allowed_width(depth, importance, fixed).tolist() == [
        10, 10, 10, 2, 2, 2, 2]


def test_adaptive_branching_widens_the_root_by_importance():
    # Root value 0; its children A (2.5), B (.25), C (-.5), all terminal.
    # After A, I(root) = 2.5 and n(root) = max(1, min(floor(2.5) + 1, 4))
    # = 3, so the root gets exactly three children; with alpha = 0 only one.
    env = Scripted(child=[[1, 2, 3, 4], [0] * 4, [0] * 4, [0] * 4, [0] * 4],
                   value=[0, 2.5, .25, -.5, 9], terminal=[0, 1, 1, 1, 1])
    base = dict(num_nodes=8, num_simulations=6, max_depth=3, c_min=(1, 1),
                c_max=(4, 1))
    result = env.run(MCTSConfig(alpha=1.0, **base))
    assert result.tree.children_index[0, 0].tolist() == [1, 2, 3, -1]
    assert result.tree.extra.importance[0, 0] == 2.5
    assert result.stats.expansions[0] == 3 and result.stats.revisits[0] == 3
    result = env.run(MCTSConfig(alpha=0.0, **base))
    assert result.tree.children_index[0, 0].tolist() == [1, -1, -1, -1]
    assert result.tree.visit_count[0, :2].tolist() == [7, 6]


def test_state_merge_rejects_near_siblings_and_keeps_the_farthest():
    # Edge 0: (1, 2, 3). Edge 1: a duplicate (distance 0), then (1, 5, 6)
    # at exactly 2: kept (not the farther (7, 8, 9)), 1 rejected. Edge 2:
    # nearest-sibling distances 0, 0, 1, none >= 2: the farthest,
    # (1, 2, 9), is kept and all 3 count as rejected.
    tokens = {0: {0: [(1, 2, 3)],
                  1: [(1, 2, 3), (1, 5, 6), (7, 8, 9)],
                  2: [(1, 2, 3), (1, 5, 6), (1, 2, 9)]}}
    env = Scripted(child=[[1, 2, 3], [0] * 3, [0] * 3, [0] * 3],
                   value=[0, .5, .25, .125], terminal=[0, 1, 1, 1],
                   tokens=tokens)
    config = MCTSConfig(num_nodes=8, num_simulations=3, max_depth=2,
                        c_min=(3, 1), c_max=(3, 1), merge_threshold=2)
    result = env.run(config)
    assert _steps(result, [1, 2, 3]) == [(1, 2, 3), (1, 5, 6), (1, 2, 9)]
    assert result.stats.merge_rejected[0] == 1 + 3
    assert result.stats.merge_fallbacks[0] == 1
    # Without merge the first candidate is kept: duplicate siblings.
    plain = env.run(dataclasses.replace(config, merge_threshold=0))
    assert _steps(plain, [1, 2, 3]) == [(1, 2, 3)] * 3
    assert plain.stats.merge_rejected[0] == 0


def test_state_merge_compares_expansions_of_the_same_iteration():
    # Two simulations widen the root in one iteration: the second one's
    # first candidate equals what the first kept, so it takes (5, 5, 5).
    tokens = {0: {0: [(1, 2, 3), (6, 6, 6)], 1: [(1, 2, 3), (5, 5, 5)]}}
    env = Scripted(child=[[1, 2], [0, 0], [0, 0]], value=[0, .5, .25],
                   terminal=[0, 1, 1], tokens=tokens)
    config = MCTSConfig(num_nodes=4, num_simulations=2, parallel=2,
                        max_depth=2, c_min=(2, 1), c_max=(2, 1),
                        merge_threshold=1)
    result = env.run(config)
    assert _steps(result, [1, 2]) == [(1, 2, 3), (5, 5, 5)]
    assert result.stats.merge_rejected[0] == 1
    assert result.stats.model_calls[0] == 1 + 2     # Root, then one round.


def test_virtual_loss_spreads_parallel_simulations():
    # Iteration 0 widens the root twice: A (value 1) and B (.5). In
    # iteration 1, simulation 0 picks A by UCB and widens it; with virtual
    # loss, simulation 1 sees N = 4, n(A) = 2, q(A) = .5 (1 + 0) / 2 and
    # picks B (.5 + sqrt(2 ln 4) > .5 + sqrt(ln 4)); without it, it also
    # reaches A, whose only edge is reserved: a collision.
    env = Scripted(child=[[1, 2], [3, 0], [4, 0], [0, 0], [0, 0]],
                   value=[0, 1, .5, 0, 0])
    base = dict(num_nodes=8, num_simulations=4, parallel=2, max_depth=3,
                c_min=(2, 1), c_max=(2, 1), virtual_value=0.0)
    result = env.run(MCTSConfig(virtual_loss=1, **base))
    tree = result.tree
    assert tree.parent[0, :5].tolist() == [-1, 0, 0, 1, 2]
    assert result.stats.collisions[0] == 0
    result = env.run(MCTSConfig(virtual_loss=0, **base))
    assert result.tree.parent[0, :5].tolist() == [-1, 0, 0, 1, -1]
    assert result.stats.collisions[0] == 1


def test_mean_backup_with_rewards_discount_and_a_terminal_revisit():
    # A chain root -> A (reward .5, value 1) -> A1 (reward .25, value -1,
    # terminal), discount .5. Sim 1: A gets 1; root gets .5 + .5 * 1 = 1.
    # Sim 2: A1 gets -1; A gets .25 + .5 * -1 = -.25; root .5 + .5 * -.25.
    # Sim 3 revisits A1 and backs up the same returns again.
    env = Scripted(child=[[1], [2], [0]], value=[0, 1, -1],
                   priors=[[0.0]] * 3, reward=[[.5], [.25], [0]],
                   terminal=[0, 0, 1])
    config = MCTSConfig(num_nodes=4, num_simulations=3, max_depth=4,
                        expansion="enumerated", discount=0.5)
    result = env.run(config)
    tree = result.tree
    assert tree.visit_count[0, :3].tolist() == [4, 3, 2]
    assert tree.value_sum[0, :3].tolist() == [
        0 + 1 + .375 + .375, 1 - .25 - .25, -2]
    assert result.stats.revisits[0] == 1 and result.stats.expansions[0] == 2
    assert result.most_visited[0] == 2 and result.best_value[0] == 2


def test_full_tree_stops_the_row_and_drops_the_expansion():
    env = Scripted(child=[[1, 2, 3]] + [[0, 0, 0]] * 3, value=[0, 1, 2, 3],
                   priors=[[0.0, -1.0, -2.0]] * 4)
    config = MCTSConfig(num_nodes=3, num_simulations=6, max_depth=3,
                        expansion="enumerated", selection="puct")
    result = env.run(config)
    assert result.stats.status[0] == FULL and result.stats.dropped[0] == 1
    assert result.stats.simulations[0] == 2        # Then the row stopped.
    assert result.tree.visit_count[0, 0] == 3
    # Three parallel simulations take actions 0, 1, 2; only two fit.
    result = env.run(dataclasses.replace(config, num_simulations=3,
                                       parallel=3))
    assert result.tree.children_index[0, 0].tolist() == [1, 2, -1]
    assert result.stats.dropped[0] == 1 and result.stats.status[0] == FULL
    roomy = env.run(dataclasses.replace(config, num_nodes=8))
    assert roomy.stats.status[0] == DONE and roomy.stats.dropped[0] == 0


def test_nan_scores_are_replaced_counted_and_never_backed_up():
    # Root priors (0, NaN): edge 1 becomes invalid. A's value, outcome and
    # reward are NaN: each becomes nan_value = -1.
    env = Scripted(child=[[1, 2], [0, 0], [0, 0]], value=[.5, NAN, 1],
                   outcome=[0, NAN, 0], priors=[[0, NAN], [0, 0], [0, 0]],
                   reward=[[NAN, 0], [0, 0], [0, 0]], terminal=[0, 1, 0])
    config = MCTSConfig(num_nodes=8, num_simulations=4, max_depth=3,
                        expansion="enumerated", nan_value=-1.0)
    result = env.run(config)
    tree = result.tree
    assert result.stats.nan_count[0] == 1 + 3
    assert tree.children_prior_logits[0, 0, 1] == -np.inf
    assert tree.children_index[0, 0].tolist() == [1, -1]
    assert tree.extra.raw_value[0, 1] == -1 and tree.reward[0, 1] == -1
    assert np.isfinite(tree.value_sum).all()
    # A is terminal: 3 revisits, each backs up -1 (reward -1 + value -1 at
    # the root, discount 1).
    assert tree.value_sum[0, :2].tolist() == [.5 - 2 * 4, -4]


def test_edit_distance_matches_the_textbook_programme():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, (300, 6)), rng.integers(0, 3, (300, 6))
    la, lb = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    got = np.asarray(jax.jit(edit_distance)(a, la, b, lb))
    want = [levenshtein(a[i, :la[i]].tolist(), b[i, :lb[i]].tolist())
            for i in range(300)]
    assert got.tolist() == want
    assert levenshtein([1, 2, 3], [1, 3]) == 1 and levenshtein([], [4]) == 1


def test_sequential_halving_schedule_equals_mctx():
    from mctx._src.seq_halving import get_sequence_of_considered_visits
    for m in (1, 2, 3, 4, 8, 16):
        for n in (1, 7, 32, 64, 100):
            assert considered_visits(m, n) == \
                get_sequence_of_considered_visits(m, n)


def test_weighted_vote():
    assert weighted_vote(["4", "5", "4", None], [.2, .5, .4, 9]) == "4"
    assert weighted_vote(["5", "4"], [.5, .5]) == "5"      # First seen.
    assert weighted_vote([None], [1.0]) is None
    assert weighted_vote(["4", "5"], [NAN, 0.1]) == "5"
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        weighted_vote(["4", "5"], [1.0])


def test_model_outputs_are_shape_checked_with_named_errors():
    env = Scripted(child=[[1], [0]], value=[0, 1], priors=[[0.0]] * 2)
    config = MCTSConfig(num_nodes=4, num_simulations=2, max_depth=2,
                        expansion="enumerated")
    tree = init_tree(jnp.zeros((1, 1), jnp.int32), jnp.ones(1, jnp.int32),
                     num_nodes=4, max_step_tokens=1, max_children=1)
    keys = jax.random.split(jax.random.key(0), 1)

    def wide(*args):
        out = env.propose_fn(*args)
        return out._replace(step_tokens=jnp.pad(
            out.step_tokens, ((0, 0), (0, 0), (0, 0), (0, 1))))

    with pytest.raises(ValueError, match=r"propose_fn returned "
                       r"Options.step_tokens with shape \(1, 1, 1, 2\); "
                       r"expected \(B, K, R, T\) = \(1, 1, 1, 1\)"):
        run_mcts(wide, env.evaluate_fn, tree, keys, config=config)

    def no_priors(*args):
        return env.evaluate_fn(*args)._replace(prior_logits=None)

    with pytest.raises(ValueError, match="evaluate_fn returned "
                       "Evaluation.prior_logits = None"):
        run_mcts(env.propose_fn, no_priors, tree, keys, config=config)

    def int_values(*args):
        out = env.evaluate_fn(*args)
        return out._replace(value=out.value.astype(jnp.int32))

    with pytest.raises(ValueError, match="Evaluation.value of dtype int32"):
        run_mcts(env.propose_fn, int_values, tree, keys, config=config)


def test_config_and_tree_validation():
    for bad in (dict(num_simulations=10, parallel=4), dict(selection="uct"),
                dict(expansion="enumerated", merge_threshold=2),
                dict(c_min=()), dict(q_transform="tanh"),
                dict(root_selection="best")):
        with pytest.raises(ValueError):
            MCTSConfig(**bad)
    env = Scripted(child=[[1], [0]], value=[0, 1])
    keys = jax.random.split(jax.random.key(0), 1)
    config = MCTSConfig(num_nodes=4, num_simulations=2, c_min=(1,),
                        c_max=(3,))
    small = init_tree(jnp.zeros((1, 1), jnp.int32), jnp.ones(1, jnp.int32),
                      num_nodes=4, max_step_tokens=1, max_children=1)
    with pytest.raises(ValueError, match="max_children >= 3"):
        run_mcts(env.propose_fn, env.evaluate_fn, small, keys, config=config)
    with pytest.raises(ValueError, match="slots per row"):
        run_mcts(env.propose_fn, env.evaluate_fn, small, keys,
                 config=dataclasses.replace(config, num_nodes=5))
