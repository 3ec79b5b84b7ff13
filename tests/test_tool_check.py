"""Tool-checked steps in Q* (and the shared host checker of both searches).

The reference is the same expansion without a tool, with the penalty
applied by hand to each step the host function refutes when called on the
proposer's own output.
"""

import dataclasses

import jax
import numpy as np
import pytest

from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.astar import AStarConfig
from qstar_jax.search.qstar import (QStarConfig, expand_states,
                                    lookahead_values)
from qstar_jax.search.tool_check import calculator_step_check, checked_steps
from qstar_jax.search.tree import init_tree
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer
from qstar_jax.tasks.arithchain import vocabulary_words

VOCAB, END, DELIM, WEIGHT = 40, 2, (5, 6, 7), 0.75


def even_start(tokens, lengths):
    """Refutes a step whose first token is odd (a stand-in for a tool)."""
    return np.asarray([n > 0 and row[0] % 2 == 0
                       for row, n in zip(tokens, lengths)])


def _config(**tool):
    return QStarConfig(
        search=AStarConfig(num_nodes=24, max_expansions=4, lam=0.5),
        proposer=ProposerConfig(num_steps=3, num_samples=6,
                                max_step_tokens=4,
                                sampling=SamplingConfig(temperature=1.5)),
        state_width=40, truncated_steps="continue", **tool)


def test_checked_steps_maps_every_step_and_names_a_bad_shape():
    tokens = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 11
    lengths = np.array([[4, 2, 0], [3, 4, 1]])
    ok = jax.jit(lambda t, n: checked_steps(even_start, t, n))(
        tokens, lengths)
    want = even_start(tokens.reshape(6, 4), lengths.reshape(6))
    np.testing.assert_array_equal(np.asarray(ok), want.reshape(2, 3))
    assert not want.all() and want.any()
    with pytest.raises(Exception, match=r"tool_check returned shape \(1,\)"):
        jax.block_until_ready(checked_steps(
            lambda t, n: np.ones(1, bool), tokens, lengths))


def test_refuted_steps_lose_the_weight_in_reward_and_q(random_qstar_models,
                                                       token_stop_rule):
    models = random_qstar_models(VOCAB)
    stop = token_stop_rule(VOCAB, END, DELIM)
    tokens, lengths = pad_states([[10, 11, 12], [20, 21, 22, 23]], width=5)
    keys = jax.random.split(jax.random.key(4), 2)
    plain, tooled = _config(), _config(tool_check=even_start,
                                       tool_weight=WEIGHT)
    base = jax.device_get(expand_states(models, stop, plain, tokens,
                                        lengths, keys))
    got = jax.device_get(expand_states(models, stop, tooled, tokens,
                                       lengths, keys))
    props = jax.device_get(propose_steps(models.policy, tokens, lengths,
                                         keys, stop, config=plain.proposer))
    refuted = ~even_start(props.tokens.reshape(6, -1),
                             props.lengths.reshape(6)).reshape(2, 3)
    assert refuted.any() and not refuted.all()
    np.testing.assert_allclose(got.reward, base.reward - WEIGHT * refuted,
                               atol=1e-6)
    np.testing.assert_allclose(got.q_value, base.q_value - WEIGHT * refuted,
                               atol=1e-6)
    np.testing.assert_array_equal(got.step_tokens, base.step_tokens)
    np.testing.assert_array_equal(got.valid, base.valid)

    # A lookahead's Q values of the grandchildren take the same penalty.
    tree = init_tree(tokens, lengths, num_nodes=8, max_step_tokens=4,
                     max_children=3)
    child = np.zeros((2, 3), np.int32)             # The roots, K times.
    look_keys = jax.random.split(jax.random.key(9), 6).reshape(2, 3)
    look = [jax.device_get(lookahead_values(models, stop, c, tree, child,
                                            look_keys))
            for c in (plain, tooled)]
    assert (look[1].value <= look[0].value + 1e-6).all()
    assert (look[1].value >= look[0].value - WEIGHT - 1e-6).all()


def test_calculator_check_reads_the_written_arithmetic():
    tokenizer = ArithTokenizer(vocabulary_words())
    steps = ["3 + 4 = 7", "3 + 4 = 8", "12 * 2 = 24", "#### 24"]
    ids = [tokenizer.encode(s) for s in steps]
    width = max(map(len, ids))
    tokens = np.array([i + [0] * (width - len(i)) for i in ids])
    ok = calculator_step_check(tokenizer)(tokens, np.array(list(map(len,
                                                                 ids))))
    assert ok.tolist() == [True, False, True, True]


def test_a_weight_without_a_tool_is_an_error():
    with pytest.raises(ValueError, match="tool_weight needs a tool_check"):
        dataclasses.replace(_config(), tool_weight=1.0)
