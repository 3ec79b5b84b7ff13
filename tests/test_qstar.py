"""Q* with a language-model policy and critics (random tiny networks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.critic import last_token_scores
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.astar import AStarConfig
from qstar_jax.search.qstar import (QStarConfig, expand_nodes,
                                    lookahead_values, qstar_search)
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
    return QStarConfig(
        search=AStarConfig(num_nodes=24, max_expansions=5,
                           num_trajectories=2, lam=0.5, aggregation="min",
                           heuristic=heuristic),
        proposer=ProposerConfig(num_steps=3, num_samples=4, max_step_tokens=5,
                                sampling=SamplingConfig(temperature=1.0)),
        state_width=40)


def _separately(critic, rows):
    tokens, lengths = pad_states(rows, width=max(map(len, rows)))
    return np.asarray(last_token_scores(critic, tokens, lengths))


def test_expansion_scores_equal_separate_critic_passes(setup):
    models, stop, rows, (tokens, lengths) = setup
    config = _config()
    tree = init_tree(tokens, lengths, num_nodes=24, max_step_tokens=5)
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


def test_lookahead_is_the_max_q_over_the_childs_own_steps(setup):
    models, stop, rows, (tokens, lengths) = setup
    config = _config("lookahead")
    result = jax.jit(qstar_search, static_argnames="config")(
        models, tokens, lengths, jax.random.split(jax.random.key(4), 3), stop,
        config=config)
    tree = result.tree
    # Recompute h of row 0's first-generation children from scratch.
    children = np.flatnonzero(np.asarray(tree.parent[0]) == 0)
    assert len(children) >= 1
    look = lookahead_values(
        models, stop, config, jax.tree.map(lambda x: x[:1], tree),
        jnp.asarray(children[None, :3], jnp.int32),
        jax.random.split(jax.random.key(5), len(children[:3]))[None])
    for j, node in enumerate(children[:3]):
        state = rows[0] + sum(trajectory_steps(tree, 0, int(node)), [])
        if bool(tree.terminal[0, node]):
            expected = _separately(models.qvm, [state])[0]
        else:
            st, sl = pad_states([state], width=40)
            props = propose_steps(models.policy, st, sl, jax.random.split(
                jax.random.key(5), len(children[:3]))[j:j + 1], stop,
                config=config.proposer)
            grand = [state + np.asarray(props.tokens[0, k, :int(
                props.lengths[0, k])]).tolist()
                for k in range(3) if props.valid[0, k]]
            expected = _separately(models.qvm, grand).max()
        np.testing.assert_allclose(look.value[0, j], expected, rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("heuristic", ["edge", "lookahead"])
def test_search_is_consistent_and_batch_independent(setup, heuristic):
    models, stop, rows, (tokens, lengths) = setup
    config = _config(heuristic)
    search = jax.jit(qstar_search, static_argnames="config")
    keys = jax.random.split(jax.random.key(6), 3)
    result = search(models, tokens, lengths, keys, stop, config=config)
    tree = result.tree
    for b in range(3):
        found = int(result.num_found[b])
        assert found >= 1 or int(result.stats.expansions[b]) == 5
        for node in np.asarray(result.trajectories[b, :found]):
            assert bool(tree.terminal[b, node])
            np.testing.assert_allclose(
                tree.f[b, node], tree.g[b, node] + 0.5 * tree.h[b, node],
                rtol=1e-6)
        assert np.all(np.isfinite(np.asarray(tree.f[b, :int(
            tree.num_nodes[b])])))
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
