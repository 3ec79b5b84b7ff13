"""Plug-in contracts and token limits of the searches: named errors, counts.

Each case here used to pass silently or fail inside XLA: a plug-in output
for the wrong batch size (broadcast), a step wider than the tree, too many
children, a wrong key count, prompts wider than the state width (cut), a
step cut at the token limit (counted as a solution) and states that
overflow the width (made terminal).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.alphallm import (AlphaLLMConfig, AlphaLLMModels,
                                       mcts_search)
from qstar_jax.search.astar import AStarConfig, astar_search
from qstar_jax.search.beam import BeamConfig, beam_search
from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.qstar import (QStarConfig, expand_states,
                                    qstar_search)
from qstar_jax.search.step_limits import TRUNCATED_STEPS, classify_steps
from qstar_jax.search.synthetic import SyntheticEnv
from qstar_jax.search.synthetic_mcts import ActionTableEnv
from qstar_jax.search.tree import init_tree, trajectory_steps

VOCAB, END, DELIM = 40, 2, (5, 6, 7)
ENV = SyntheticEnv(seed=3, branching=3)
CONFIG = AStarConfig(num_nodes=16, max_expansions=3)


def _search(expand_fn, rows=2, keys=None, lookahead_fn=None, **changes):
    tree = ENV.init_tree(list(range(1, rows + 1)), num_nodes=16)
    keys = jax.random.split(jax.random.key(0), rows) if keys is None \
        else keys
    config = AStarConfig(**{**vars(CONFIG), **changes})
    return astar_search(expand_fn, tree, keys, config=config,
                        lookahead_fn=lookahead_fn)


def test_expand_fn_output_for_the_wrong_batch_is_named():
    def one_row(tree, node, keys):               # Row 0's output only.
        out = ENV.expand_fn(tree, node, keys)
        return jax.tree.map(lambda x: x[:1], out)

    with pytest.raises(ValueError, match=r"expand_fn .*one_row returned "
                       r"Expansion.step_tokens with shape \(1, 3, 1\); "
                       r"expected \(B, K, T\) = \(2, 3, 1\)"):
        _search(one_row)


def test_too_wide_steps_too_many_children_and_dtypes_are_named():
    def wide(tree, node, keys):
        out = ENV.expand_fn(tree, node, keys)
        return out._replace(step_tokens=jnp.pad(out.step_tokens,
                                                ((0, 0), (0, 0), (0, 1))))

    with pytest.raises(ValueError, match=r"Expansion.step_tokens with shape "
                       r"\(2, 3, 2\); expected \(B, K, T\) = \(2, 3, 1\)"):
        _search(wide)

    def many(tree, node, keys):
        out = ENV.expand_fn(tree, node, keys)
        return jax.tree.map(lambda x: jnp.concatenate([x, x], axis=1)
                            if x.ndim >= 2 else x, out)

    with pytest.raises(ValueError, match=r"K = 6 children per node .* C = 3 "
                       "edges per node"):
        _search(many)

    def int_reward(tree, node, keys):
        out = ENV.expand_fn(tree, node, keys)
        return out._replace(reward=out.reward.astype(jnp.int32))

    with pytest.raises(ValueError, match="Expansion.reward of dtype int32; "
                       "expected a float dtype"):
        _search(int_reward)

    def short_flags(tree, node, keys):
        out = ENV.expand_fn(tree, node, keys)
        return out._replace(truncated=out.valid[:, :2])

    with pytest.raises(ValueError, match=r"Expansion.truncated with shape "
                       r"\(2, 2\); expected \(B, K\) = \(2, 3\)"):
        _search(short_flags)

    def scalar_lookahead(tree, child, keys):
        out = ENV.lookahead_fn(tree, child, keys)
        return out._replace(value=out.value[:, 0])

    with pytest.raises(ValueError, match=r"lookahead_fn .*scalar_lookahead "
                       r"returned Lookahead.value with shape \(2,\); "
                       r"expected \(B, K\) = \(2, 3\)"):
        _search(ENV.expand_fn, lookahead_fn=scalar_lookahead,
                heuristic="lookahead")


def test_wrong_key_counts_are_named():
    with pytest.raises(ValueError, match=r"astar_search: keys has shape "
                       r"\(3,\).*expected one PRNG key per problem, "
                       r"\(B,\) = \(2,\)"):
        _search(ENV.expand_fn, keys=jax.random.split(jax.random.key(0), 3))
    env = ActionTableEnv(seed=1, num_actions=2)
    tree = init_tree(jnp.zeros((2, 1), jnp.int32), jnp.ones(2, jnp.int32),
                     num_nodes=8, max_step_tokens=1, max_children=2)
    with pytest.raises(ValueError, match=r"run_mcts: keys has shape \(1,\)"):
        run_mcts(env.propose_fn, env.evaluate_fn, tree,
                 jax.random.split(jax.random.key(0), 1),
                 config=MCTSConfig(num_nodes=8, num_simulations=4,
                                   expansion="enumerated"))


@pytest.fixture(scope="module")
def lm(random_qstar_models, token_stop_rule):
    models = random_qstar_models(VOCAB)
    stop = token_stop_rule(VOCAB, END, DELIM)
    rows = [[10, 11, 12, 13, 14], [20, 21, 22]]
    return models, stop, rows, pad_states(rows, width=5)


def _qstar_config(mode, state_width=40, expansions=5):
    return QStarConfig(
        search=AStarConfig(num_nodes=24, max_expansions=expansions,
                           num_trajectories=2, lam=0.5),
        proposer=ProposerConfig(num_steps=3, num_samples=4, max_step_tokens=4,
                                sampling=SamplingConfig(temperature=1.0)),
        state_width=state_width, truncated_steps=mode)


def test_prompts_wider_than_the_state_width_are_errors(lm):
    models, stop, _, (tokens, lengths) = lm
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="qstar_search: prompts have 5 token "
                       "slots but config.state_width is 4"):
        qstar_search(models, tokens, lengths, keys, stop,
                     config=_qstar_config("drop", state_width=4))
    with pytest.raises(ValueError, match="beam_search: prompts have 5"):
        beam_search(models, tokens, lengths, keys, stop,
                    config=BeamConfig(state_width=4))
    mcts = AlphaLLMConfig(search=MCTSConfig(num_nodes=8, c_min=(2,),
                                            c_max=(2,)), state_width=4)
    with pytest.raises(ValueError, match="mcts_search: prompts have 5"):
        mcts_search(AlphaLLMModels(policy=models.policy), tokens, lengths,
                    keys, stop, config=mcts)
    with pytest.raises(ValueError, match="qstar_search: keys has shape"):
        qstar_search(models, tokens, lengths, keys[:1], stop,
                     config=_qstar_config("drop"))
    with pytest.raises(ValueError, match="truncated_steps='cut'"):
        _qstar_config("cut")


@pytest.mark.parametrize("mode", TRUNCATED_STEPS)
def test_expansion_flags_follow_the_rules_for_each_mode(lm, mode):
    """expand_states against the rules applied by hand to the proposer's
    own output (state width 8: a kept cut step overflows row 0)."""
    models, stop, rows, (tokens, lengths) = lm
    config = _qstar_config(mode, state_width=8)
    keys = jax.random.split(jax.random.key(5), 2)
    exp = jax.device_get(expand_states(models, stop, config, tokens,
                                       lengths, keys))
    props = jax.device_get(propose_steps(models.policy, tokens, lengths,
                                         keys, stop, config=config.proposer))
    seen = set()
    for b, row in enumerate(rows):
        for k in range(3):
            valid = bool(props.valid[b, k])
            cut = valid and bool(props.truncated[b, k])
            kept = valid and not (cut and mode == "drop")
            over = kept and len(row) + int(props.lengths[b, k]) > 8
            ends = bool(props.finished[b, k]) and not cut
            terminal = ends or (cut and mode == "finish")
            assert bool(exp.truncated[b, k]) == cut
            assert bool(exp.overflow[b, k]) == over
            assert bool(exp.valid[b, k]) == (kept and not over)
            assert bool(exp.terminal[b, k]) == (kept and not over
                                                and terminal)
            seen.add((cut, over))
    assert any(cut for cut, _ in seen)
    assert any(over for _, over in seen) == (mode != "drop")


@pytest.mark.parametrize("mode", TRUNCATED_STEPS)
def test_cut_steps_are_solutions_only_when_the_config_says_so(lm, mode):
    """With 'drop' and 'continue' no found trajectory ends in a cut step
    and every node's state fits the width; with 'finish' cut steps are
    found as solutions. The statistics count what was cut or overflowed."""
    models, stop, rows, (tokens, lengths) = lm
    config = _qstar_config(mode, state_width=14, expansions=8)
    keys = jax.random.split(jax.random.key(7), 2)
    result = jax.device_get(jax.jit(qstar_search, static_argnames="config")(
        models, tokens, lengths, keys, stop, config=config))
    ends = np.asarray(stop.end) | np.asarray(stop.delimiter)
    finals = np.asarray(stop.end) | np.asarray(stop.final)
    cut_solutions = 0
    for b, row in enumerate(rows):
        for node in range(1, int(result.tree.num_nodes[b])):
            state = row + sum(trajectory_steps(result.tree, b, node), [])
            assert len(state) <= 14
            step = trajectory_steps(result.tree, b, node)[-1]
            cut = not ends[step[-1]]
            if mode == "drop":
                assert not cut
            if bool(result.tree.terminal[b, node]):
                assert cut or finals[step].any()
        for node in result.trajectories[b, :int(result.num_found[b])]:
            step = trajectory_steps(result.tree, b, int(node))[-1]
            cut_solutions += not ends[step[-1]]
    assert (cut_solutions > 0) == (mode == "finish")
    assert int(result.stats.truncated.sum()) > 0
    if mode != "finish":               # 'finish' solves before it is deep.
        assert int(result.stats.overflow.sum()) > 0


def test_mcts_counts_cut_and_overflowing_candidates(lm):
    models, stop, rows, (tokens, lengths) = lm
    config = AlphaLLMConfig(
        search=MCTSConfig(num_nodes=16, num_simulations=8, parallel=2,
                          max_depth=4, c_min=(2,), c_max=(2,)),
        num_candidates=3, max_step_tokens=4, state_width=12,
        sampling=SamplingConfig(temperature=1.0), num_rollouts=1,
        rollout_tokens=4)
    keys = jax.random.split(jax.random.key(2), 2)
    mcts_models = AlphaLLMModels(policy=models.policy, prm=models.prm)
    result = jax.device_get(jax.jit(mcts_search, static_argnames="config")(
        mcts_models, tokens, lengths, keys, stop, config=config))
    ends = np.asarray(stop.end) | np.asarray(stop.delimiter)
    for b, row in enumerate(rows):
        for node in range(1, int(result.tree.num_nodes[b])):
            steps = trajectory_steps(result.tree, b, node)
            assert len(row) + sum(map(len, steps)) <= 12
            assert ends[steps[-1][-1]], "a cut option entered the tree"
    assert int(result.stats.truncated.sum()) > 0
    assert int(result.stats.overflow.sum()) > 0


def test_classify_steps_truth_table():
    valid = jnp.asarray([True, True, True, True, False])
    finished = jnp.asarray([True, False, True, False, True])
    truncated = jnp.asarray([False, False, True, True, False])
    lengths = jnp.asarray([3, 9, 3, 3, 3])
    table = {mode: classify_steps(valid=valid, finished=finished,
                                  truncated=truncated, state_lengths=lengths,
                                  state_width=8, mode=mode)
             for mode in TRUNCATED_STEPS}
    for out in table.values():
        assert out.truncated.tolist() == [False, False, True, True, False]
        assert out.overflow.tolist() == [False, True, False, False, False]
    assert table["drop"].valid.tolist() == [True, False, False, False, False]
    assert table["continue"].valid.tolist() == [True, False, True, True,
                                                False]
    assert table["continue"].terminal.tolist() == [True] + [False] * 4
    assert table["finish"].terminal.tolist() == [True, False, True, True,
                                                 False]
    with pytest.raises(ValueError, match="truncated_steps"):
        functools.partial(classify_steps, mode="keep")(
            valid=valid, finished=finished, truncated=truncated,
            state_lengths=lengths, state_width=8)
