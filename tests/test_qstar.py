"""Q* with a language-model policy and critics (random tiny networks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.critic import last_token_scores
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.astar import (BUDGET, EXHAUSTED, LOOKAHEAD_SALT,
                                    SOLVED, AStarConfig)
from qstar_jax.search.astar_tree import OPEN
from qstar_jax.search.qstar import QStarConfig, expand_nodes, qstar_search
from qstar_jax.search.tree import init_tree, trajectory_steps

VOCAB, END, DELIM = 40, 2, (5, 6, 7)


@pytest.fixture(scope="module")
def setup(random_qstar_models, token_stop_rule):
    models = random_qstar_models(VOCAB)
    stop = token_stop_rule(VOCAB, END, DELIM)
    rng = np.random.default_rng(0)
    rows = [rng.integers(8, VOCAB, n).tolist() for n in (5, 3, 4)]
    prompts = pad_states(rows, width=5)
    return models, stop, rows, prompts


def _config(heuristic="edge"):
    # The random policy cuts most 5-token steps; finishing them (not the
    # default 'drop') gives these searches terminal nodes to find.
    return QStarConfig(
        search=AStarConfig(num_nodes=24, max_expansions=5,
                           num_trajectories=2, lam=0.5, aggregation="min",
                           heuristic=heuristic),
        proposer=ProposerConfig(num_steps=3, num_samples=4, max_step_tokens=5,
                                sampling=SamplingConfig(temperature=1.0)),
        state_width=40, truncated_steps="finish")


def _separately(critic, rows):
    tokens, lengths = pad_states(rows, width=max(map(len, rows)))
    return np.asarray(last_token_scores(critic, tokens, lengths))


def test_expansion_scores_equal_separate_critic_passes(setup):
    models, stop, rows, (tokens, lengths) = setup
    config = _config()
    tree = init_tree(tokens, lengths, num_nodes=24, max_step_tokens=5,
                     max_children=3)
    keys = jax.random.split(jax.random.key(3), 3)
    exp = expand_nodes(models, stop, config, tree, jnp.zeros(3, jnp.int32),
                       keys)
    props = propose_steps(models.policy, tokens, lengths, keys, stop,
                          config=config.proposer)
    np.testing.assert_array_equal(exp.step_tokens, props.tokens)
    children, where = [], []
    for b, prompt in enumerate(rows):
        for k in range(3):
            if exp.valid[b, k]:
                n = int(exp.step_lengths[b, k])
                children.append(prompt + np.asarray(
                    exp.step_tokens[b, k, :n]).tolist())
                where.append((b, k))
    prm, qvm = _separately(models.prm, children), _separately(models.qvm,
                                                              children)
    for i, (b, k) in enumerate(where):
        np.testing.assert_allclose(exp.reward[b, k], prm[i], rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(exp.q_value[b, k], qvm[i], rtol=1e-4,
                                   atol=1e-5)


def test_lookahead_h_stored_by_the_search_is_the_max_q_of_own_steps(setup):
    """h of the root's children, as the search stored it, equals max_a'
    Q(child, a') over the child's own top-K steps proposed with the key the
    search documents (split(fold_in(fold_in(key, 0), 1), K)[k] for child k
    of the first expansion), recomputed one child at a time; a terminal
    child's h is its own edge value."""
    models, stop, rows, (tokens, lengths) = setup
    config = _config("lookahead")
    keys = jax.random.split(jax.random.key(4), 3)
    result = jax.jit(qstar_search, static_argnames="config")(
        models, tokens, lengths, keys, stop, config=config)
    tree = result.tree
    kinds = set()
    for b in range(3):
        assert int(result.pop_order[b, 0]) == 0      # Expansion 0: the root.
        look_keys = jax.random.split(jax.random.fold_in(
            jax.random.fold_in(keys[b], 0), LOOKAHEAD_SALT), 3)
        children = np.flatnonzero(np.asarray(tree.parent[b]) == 0)
        assert len(children) >= 2
        for node in children:
            k = int(tree.action_from_parent[b, node])
            state = rows[b] + sum(trajectory_steps(tree, b, int(node)), [])
            if bool(tree.terminal[b, node]):
                expected = _separately(models.qvm, [state])[0]
            else:
                st, sl = pad_states([state], width=40)
                props = propose_steps(models.policy, st, sl,
                                      look_keys[k:k + 1], stop,
                                      config=config.proposer)
                grand = [state + np.asarray(props.tokens[0, j, :int(
                    props.lengths[0, j])]).tolist()
                    for j in range(3) if props.valid[0, j]]
                expected = _separately(models.qvm, grand).max()
            kinds.add(bool(tree.terminal[b, node]))
            np.testing.assert_allclose(tree.extra.h[b, node], expected,
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(
                tree.extra.f[b, node],
                tree.extra.g[b, node] + 0.5 * tree.extra.h[b, node],
                rtol=1e-6)
    assert False in kinds, "no non-terminal child: lookahead never ran"


@pytest.mark.parametrize("heuristic", ["edge", "lookahead"])
def test_search_is_consistent_and_batch_independent(setup, heuristic):
    models, stop, rows, (tokens, lengths) = setup
    config = _config(heuristic)
    search = jax.jit(qstar_search, static_argnames="config")
    keys = jax.random.split(jax.random.key(6), 3)
    result = search(models, tokens, lengths, keys, stop, config=config)
    tree = result.tree
    stats = result.stats
    for b in range(3):
        found = int(result.num_found[b])
        status = int(stats.status[b])
        # Each row ended for the reason its status gives.
        if status == SOLVED:
            assert found == 2
        elif status == BUDGET:
            assert found < 2 and int(stats.expansions[b]) == 5
        else:
            assert status == EXHAUSTED and found < 2
            assert not (np.asarray(tree.extra.status[b]) == OPEN).any()
        assert int(result.num_pops[b]) == int(stats.expansions[b]) + found
        for node in np.asarray(result.trajectories[b, :found]):
            assert bool(tree.terminal[b, node])
            np.testing.assert_allclose(
                tree.extra.f[b, node],
                tree.extra.g[b, node] + 0.5 * tree.extra.h[b, node],
                rtol=1e-6)
        assert np.all(np.isfinite(np.asarray(tree.extra.f[b, :int(
            tree.num_nodes[b])])))
    assert int(result.num_found.sum()) >= 1, "no trajectory was checked"
    alone = search(models, tokens[1:2], lengths[1:2], keys[1:2], stop,
                   config=config)
    np.testing.assert_array_equal(alone.pop_order[0], result.pop_order[1])
    np.testing.assert_array_equal(alone.trajectories[0],
                                  result.trajectories[1])


def test_host_loop_agrees_with_batched_search(setup):
    """The peers' way (a Python heap, one state per model call) and the
    batched search pop the same nodes and find the same trajectories."""
    from qstar_jax.search.host_loop import host_qstar
    models, stop, rows, (tokens, lengths) = setup
    config = _config()
    keys = jax.random.split(jax.random.key(8), 3)
    batched = jax.jit(qstar_search, static_argnames="config")(
        models, tokens, lengths, keys, stop, config=config)
    for b, prompt in enumerate(rows):
        ref = host_qstar(models, stop, config, prompt, keys[b])
        pops = int(batched.num_pops[b])
        assert np.asarray(batched.pop_order[b, :pops]).tolist() == \
            ref.pop_order
        found = int(batched.num_found[b])
        assert np.asarray(batched.trajectories[b, :found]).tolist() == \
            ref.trajectories
        for node in ref.trajectories:
            assert trajectory_steps(batched.tree, b, node) == ref.steps(node)
        assert int(batched.stats.generated_tokens[b]) == ref.generated_tokens
