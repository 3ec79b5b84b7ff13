"""eta-MCTS with a language-model policy and critics (random tiny networks).

The options and node scores of `alphallm` are recomputed independently
(one state at a time, each critic in its own pass), and the whole search is
checked for budget accounting, tree consistency, reproducibility from the
keys and batch independence.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.config import tiny
from qstar_jax.models.critic import last_token_scores
from qstar_jax.models.decoder import init_decoder
from qstar_jax.sampling.decode import prefill, sample_continuations
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import rollout
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.alphallm import (AlphaLLMConfig, AlphaLLMModels,
                                       calculator_step_check, evaluate_nodes,
                                       init_search_tree, mcts_search,
                                       propose_options)
from qstar_jax.search.mcts_types import DONE, MCTSConfig, mcts_nodes
from qstar_jax.search.tree import add_nodes, trajectory_steps
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer

VOCAB, END, DELIM = 40, 2, tuple(range(5, 17))


@pytest.fixture(scope="module")
def setup(random_critic, token_stop_rule):
    models = AlphaLLMModels(
        policy=init_decoder(tiny(vocab_size=VOCAB, num_layers=2), seed=0),
        fast_policy=init_decoder(tiny(vocab_size=VOCAB, num_layers=1),
                                 seed=5),
        value=random_critic(VOCAB, 1), prm=random_critic(VOCAB, 2),
        orm=random_critic(VOCAB, 3))
    stop = token_stop_rule(VOCAB, END, DELIM)
    rng = np.random.default_rng(0)
    rows = [rng.integers(17, VOCAB, n).tolist() for n in (5, 3, 4)]
    return models, stop, rows, pad_states(rows, width=5)


def _config(**changes) -> AlphaLLMConfig:
    base = dict(
        search=MCTSConfig(num_nodes=20, num_simulations=12, parallel=2,
                          max_depth=4, c_min=(3, 2), c_max=(4, 2),
                          merge_threshold=1),
        num_candidates=3, max_step_tokens=6,
        sampling=SamplingConfig(temperature=1.0), state_width=40,
        value_weight=1.0, prm_weight=0.5, orm_weight=2.0, num_rollouts=2,
        rollout_tokens=8)
    base.update(changes)
    return AlphaLLMConfig(**base)


_last_token_scores = jax.jit(last_token_scores)
_rollout = jax.jit(rollout, static_argnames=("max_tokens", "num_samples",
                                             "sampling"))


def _scores(critic, seqs):
    """Each sequence scored in its own row (one width: one compile)."""
    tokens, lengths = pad_states(seqs, width=48)
    return np.asarray(_last_token_scores(critic, tokens, lengths))


def _with_nodes(tokens, lengths, config, steps, terminal):
    """A tree whose row 0 root has the given children ([K] token lists)."""
    tree = init_search_tree(tokens, lengths, config)
    tree = tree.replace(extra=mcts_nodes(tree))
    k, t = len(steps), config.max_step_tokens
    step = np.zeros((tokens.shape[0], k, t), np.int32)
    for i, s in enumerate(steps):
        step[:, i, :len(s)] = s
    b = tokens.shape[0]
    return add_nodes(
        tree, jnp.broadcast_to(jnp.arange(1, k + 1), (b, k)),
        jnp.zeros((b, k), jnp.int32), jnp.broadcast_to(jnp.arange(k), (b, k)),
        jnp.asarray(step), jnp.asarray([[len(s) for s in steps]] * b),
        jnp.zeros((b, k)), jnp.asarray([terminal] * b))


def test_options_are_the_policys_samples(setup):
    models, stop, rows, (tokens, lengths) = setup
    config = _config(prior="mean")
    tree = init_search_tree(tokens, lengths, config)
    keys = jax.random.split(jax.random.key(2), 3)[:, None]
    opts = propose_options(models, stop, config, tree,
                           jnp.zeros((3, 1), jnp.int32),
                           jnp.zeros((3, 1), jnp.int32), keys)
    cache, logits = prefill(models.policy, tokens, lengths)
    conts = sample_continuations(models.policy, cache, logits, keys[:, 0],
                                 num_samples=3, max_tokens=6, stop=stop,
                                 sampling=config.sampling)
    np.testing.assert_array_equal(opts.step_tokens[:, 0], conts.tokens)
    np.testing.assert_allclose(
        opts.prior_logits[:, 0],
        conts.log_probs / np.maximum(conts.lengths, 1), rtol=1e-6)
    # Default truncated_steps='drop': a cut sample is no option; the rest
    # fit the state width and are terminal when they end the solution.
    cut = np.asarray(conts.truncated)
    np.testing.assert_array_equal(opts.truncated[:, 0], cut)
    np.testing.assert_array_equal(opts.valid[:, 0], ~cut)
    assert not np.asarray(opts.overflow).any()
    ends = (conts.ended_by_end | conts.contains_final) & ~cut
    np.testing.assert_array_equal(opts.terminal[:, 0], ends)
    assert (~ends).any() and ends.any() and cut.any()
    np.testing.assert_array_equal(opts.generated_tokens[:, 0],
                                  conts.lengths.sum(1))


def test_node_score_equals_separate_critic_passes(setup):
    """value = b_v V(s) + b_prm PRM(s) + b_orm mean ORM(rollouts), each
    critic on each full sequence alone; a terminal node uses ORM(s)."""
    models, stop, rows, (tokens, lengths) = setup
    config = _config()
    steps = [[20, 21, 5], [22, 6], [23, 24, 25, 2]]
    tree = _with_nodes(tokens, lengths, config, steps, [False, False, True])
    nodes = jnp.broadcast_to(jnp.arange(1, 4), (3, 3))
    keys = jax.random.split(jax.random.key(3), 9).reshape(3, 3)
    evaluate = jax.jit(evaluate_nodes, static_argnames="config")
    ev = evaluate(models, stop, tree=tree, nodes=nodes, keys=keys,
                  config=config)
    for b in range(3):
        for k, step in enumerate(steps):
            state = rows[b] + step
            v = _scores(models.value, [state])[0]
            prm = _scores(models.prm, [state])[0]
            own = _scores(models.orm, [state])[0]
            if k == 2:                                     # Terminal.
                orm, spent = own, 0
            else:
                st, sl = pad_states([state], width=config.state_width)
                conts = _rollout(models.fast_policy, st, sl,
                                 keys[b, k:k + 1], stop, max_tokens=8,
                                 num_samples=2,
                                 sampling=config.rollout_sampling)
                full = [state + np.asarray(conts.tokens[0, j, :int(
                    conts.lengths[0, j])]).tolist() for j in range(2)]
                orm = _scores(models.orm, full).mean()
                spent = int(conts.lengths.sum())
            np.testing.assert_allclose(ev.value[b, k],
                                       v + 0.5 * prm + 2.0 * orm,
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(ev.outcome[b, k], own, rtol=1e-4,
                                       atol=1e-5)
            assert int(ev.generated_tokens[b, k]) == spent
    # An absent critic drops its term.
    no_value = models._replace(value=None)
    ev2 = evaluate(no_value, stop, tree=tree, nodes=nodes, keys=keys,
                   config=config)
    v = np.asarray([[_scores(models.value, [rows[b] + s])[0] for s in steps]
                    for b in range(3)])
    np.testing.assert_allclose(ev2.value, np.asarray(ev.value) - v,
                               rtol=1e-4, atol=1e-5)


def test_tool_check_penalises_wrong_calculations(token_stop_rule):
    tok = ArithTokenizer(["So"])
    check = calculator_step_check(tok)
    texts = [" 3 + 4 = 7\n", " 3 + 4 = 8\n", " So\n"]
    ids = [tok.encode(t) for t in texts]
    width = max(map(len, ids))
    arr = np.asarray([i + [0] * (width - len(i)) for i in ids], np.int32)
    assert check(arr, np.asarray([len(i) for i in ids])).tolist() == [
        True, False, True]
    vocab = tok.vocab_size
    models = AlphaLLMModels(
        policy=init_decoder(tiny(vocab_size=vocab, num_layers=1), seed=0),
        value=None, prm=None, orm=None)
    stop = token_stop_rule(vocab, tok.eos_id, [tok.encode("\n")[0]])
    config = _config(max_step_tokens=width, tool_weight=0.5,
                     tool_check=check)
    prompt, plen = pad_states([tok.encode("Q: 3 + 4?\n")], width=16)
    tree = _with_nodes(prompt, plen, config, ids, [False] * 3)
    nodes = jnp.asarray([[1, 2, 3]])
    keys = jax.random.split(jax.random.key(0), 3)[None]
    ev = jax.jit(functools.partial(evaluate_nodes, models, stop, config))(
        tree, nodes, keys)
    assert np.asarray(ev.value).tolist() == [[0.0, -0.5, 0.0]]
    with pytest.raises(ValueError, match="tool_check"):
        _config(tool_weight=0.5)


def test_search_is_consistent_reproducible_and_batch_independent(setup):
    models, stop, rows, (tokens, lengths) = setup
    config = _config()
    search = jax.jit(mcts_search, static_argnames="config")
    keys = jax.random.split(jax.random.key(6), 3)
    result = jax.tree.map(np.asarray, search(models, tokens, lengths, keys,
                                             stop, config=config))
    tree, stats = result.tree, result.stats
    for b in range(3):
        num = int(tree.num_nodes[b])
        assert stats.status[b] == DONE
        assert stats.simulations[b] + stats.collisions[b] + \
            stats.failed[b] == 12
        assert stats.expansions[b] == num - 1
        assert tree.visit_count[b, 0] == 1 + stats.simulations[b]
        # Every node's visits: its own evaluation plus its children's.
        kids = np.bincount(tree.parent[b, 1:num], tree.visit_count[b, 1:num],
                           minlength=num)
        revisits = tree.visit_count[b, :num] - 1 - kids
        leaf = tree.terminal[b, :num] | (tree.depth[b, :num]
                                         >= config.search.max_depth)
        assert (revisits >= 0).all() and (revisits[~leaf] == 0).all()
        assert revisits.sum() == stats.revisits[b]
        widths = (tree.children_index[b, :num] >= 0).sum(1)
        assert widths[0] <= 4 and (widths[1:] <= 2).all()
        assert np.isfinite(tree.value_sum[b]).all()
        for x in range(1, num):
            steps = trajectory_steps(tree, b, x)
            assert len(rows[b]) + sum(map(len, steps)) <= config.state_width
        if result.best_outcome[b] >= 0:
            assert tree.terminal[b, result.best_outcome[b]]
    assert stats.max_depth.max() >= 2, "the search never went deeper"
    assert stats.merge_rejected.sum() + stats.revisits.sum() > 0
    again = jax.tree.map(np.asarray, search(models, tokens, lengths, keys,
                                            stop, config=config))
    for x, y in zip(jax.tree.leaves(result), jax.tree.leaves(again)):
        np.testing.assert_array_equal(x, y)
    alone = jax.tree.map(np.asarray, search(
        models, tokens[1:2], lengths[1:2], keys[1:2], stop, config=config))
    row = jax.tree.map(lambda x: x[1:2], result)
    for x, y in zip(jax.tree.leaves(row), jax.tree.leaves(alone)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    other = search(models, tokens[1:2], lengths[1:2], keys[0:1], stop,
                   config=config)
    assert not np.array_equal(np.asarray(other.tree.step_tokens),
                              alone.tree.step_tokens)


def test_config_validation():
    with pytest.raises(ValueError, match="widening"):
        _config(search=MCTSConfig(expansion="enumerated"))
    with pytest.raises(ValueError, match="prior"):
        _config(prior="max")
    assert dataclasses.replace(_config(), num_rollouts=1).num_rollouts == 1
