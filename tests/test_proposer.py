"""The step proposer on a random tiny decoder.

References: teacher-forced scoring of each child on its own (a separate full
forward pass per child, no cache) and a plain argmax loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.sampling.decode import (StopRule, forward_logits,
                                       sequence_log_probs)
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import (ProposerConfig, greedy_step,
                                         propose_steps, rollout)
from qstar_jax.sampling.states import (CacheOverflowError, check_context,
                                       pad_states, stop_rule)
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer

VOCAB = 40
END = 2
DELIMITERS = (5, 6, 7)


@pytest.fixture(scope="module")
def model():
    return init_decoder(tiny(vocab_size=VOCAB, num_layers=2), seed=0)


@pytest.fixture(scope="module")
def stop():
    delim = jnp.zeros(VOCAB, bool).at[jnp.asarray(DELIMITERS)].set(True)
    return StopRule(delimiter=delim, end=jnp.zeros(VOCAB, bool).at[END].set(
        True), final=jnp.zeros(VOCAB, bool).at[9].set(True))


@pytest.fixture(scope="module")
def states():
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, VOCAB, n).tolist() for n in (12, 3, 7, 1)]
    return pad_states(rows, width=12)


CONFIG = ProposerConfig(num_steps=4, num_samples=8, max_step_tokens=6,
                        sampling=SamplingConfig(temperature=1.0))
propose = jax.jit(propose_steps, static_argnames="config")


def _keys(n, seed=1):
    return jax.random.split(jax.random.key(seed), n)


def _step(out, b, k):
    return np.asarray(out.tokens[b, k, :int(out.lengths[b, k])]).tolist()


def _separate_log_probs(model, prompts, children):
    """Sum log p(child | prompt), each pair scored in its own padded row."""
    rows = [p + c for p, c in zip(prompts, children)]
    tokens, lengths = pad_states(rows, width=max(map(len, rows)))
    lp = np.asarray(jax.jit(sequence_log_probs)(model, tokens, lengths))
    return [float(lp[i, len(p) - 1:len(r) - 1].sum())
            for i, (p, r) in enumerate(zip(prompts, rows))]


def test_k_distinct_steps_each_ending_at_a_stop(model, stop, states):
    tokens, lengths = states
    out = propose(model, tokens, lengths, _keys(4), stop, config=CONFIG)
    assert out.tokens.shape == (4, 4, 6)
    for b in range(4):
        steps = [tuple(_step(out, b, k)) for k in range(4)
                 if out.valid[b, k]]
        assert len(steps) == len(set(steps)) >= 1
        lp = np.asarray(out.log_probs[b])[np.asarray(out.valid[b])]
        assert np.all(np.diff(lp) <= 0), "most likely first"
        for k, step in enumerate(steps):
            last = step[-1]
            stopped = last in DELIMITERS or last == END
            assert stopped != bool(out.truncated[b, k])
            assert not any(t in DELIMITERS or t == END for t in step[:-1])
            assert bool(out.finished[b, k]) == (last == END or 9 in step)
            assert np.all(np.asarray(out.tokens[b, k, len(step):]) == 0)
    assert np.all(np.asarray(out.generated_tokens) >= 8)


def test_shared_prefix_log_probs_equal_separate_prefills(model, stop, states):
    """Each child's log-prob equals scoring prompt + child on its own."""
    tokens, lengths = states
    out = propose(model, tokens, lengths, _keys(4), stop, config=CONFIG)
    prompts, children, ours = [], [], []
    for b in range(4):
        for k in range(4):
            if out.valid[b, k]:
                prompts.append(np.asarray(tokens[b, :int(lengths[b])]).tolist())
                children.append(_step(out, b, k))
                ours.append(float(out.log_probs[b, k]))
    assert len(ours) >= 8
    np.testing.assert_allclose(ours, _separate_log_probs(model, prompts,
                                                         children),
                               rtol=1e-5, atol=1e-5)


def test_long_rollouts_match_teacher_forcing(model, stop, states):
    """64-token continuations: the suffix cache stays exact as it fills."""
    tokens, lengths = states
    out = jax.jit(rollout, static_argnames=("max_tokens", "num_samples",
                                            "sampling"))(
        model, tokens, lengths, _keys(4), stop._replace(
            end=jnp.zeros(VOCAB, bool)), max_tokens=64, num_samples=2,
        sampling=SamplingConfig(temperature=1.0))
    assert np.all(np.asarray(out.lengths) == 64), "delimiters do not stop"
    prompts = [np.asarray(tokens[b, :int(lengths[b])]).tolist()
               for b in range(4) for _ in range(2)]
    children = [np.asarray(out.tokens[b, m]).tolist()
                for b in range(4) for m in range(2)]
    np.testing.assert_allclose(np.asarray(out.log_probs).reshape(-1),
                               _separate_log_probs(model, prompts, children),
                               rtol=1e-5, atol=1e-4)


def test_same_key_same_steps_and_batch_independence(model, stop, states):
    tokens, lengths = states
    keys = _keys(4)
    a = propose(model, tokens, lengths, keys, stop, config=CONFIG)
    b = propose(model, tokens, lengths, keys, stop, config=CONFIG)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    alone = propose(model, tokens[2:3], lengths[2:3], keys[2:3], stop,
                    config=CONFIG)
    np.testing.assert_array_equal(alone.tokens[0], a.tokens[2])
    other = propose(model, tokens, lengths, _keys(4, seed=9), stop,
                    config=CONFIG)
    assert not np.array_equal(other.tokens, a.tokens)


def test_duplicates_are_removed(model, stop, states):
    """Near-greedy sampling draws the same step M times: one survives."""
    tokens, lengths = states
    config = ProposerConfig(num_steps=3, num_samples=6, max_step_tokens=6,
                            sampling=SamplingConfig(temperature=1e-4))
    out = propose(model, tokens, lengths, _keys(4), stop, config=config)
    np.testing.assert_array_equal(out.valid[:, 0], True)
    np.testing.assert_array_equal(out.valid[:, 1:], False)
    assert np.all(np.isneginf(np.asarray(out.log_probs[:, 1:])))


def test_greedy_step_is_argmax_decoding(model, stop, states):
    tokens, lengths = states
    out = jax.jit(greedy_step, static_argnames="max_step_tokens")(
        model, tokens, lengths, stop, max_step_tokens=6)
    # Reference: append the argmax token to every row, 6 times, by full
    # forward passes without a cache.
    seqs = [np.asarray(tokens[b, :int(lengths[b])]).tolist() for b in range(4)]
    expected = [[] for _ in range(4)]
    logits_fn = jax.jit(forward_logits)
    for _ in range(6):
        padded, lens = pad_states(seqs, width=12 + 6)
        logits = np.asarray(logits_fn(model, padded, lens))
        for b in range(4):
            done = expected[b] and (expected[b][-1] in DELIMITERS
                                    or expected[b][-1] == END)
            if not done:
                nxt = int(np.argmax(logits[b, len(seqs[b]) - 1]))
                expected[b].append(nxt)
                seqs[b].append(nxt)
    for b in range(4):
        assert _step(out, b, 0) == expected[b]


def test_pad_states_errors():
    with pytest.raises(CacheOverflowError, match="holds 4"):
        pad_states([[1, 2, 3], [1, 2, 3, 4, 5]], width=4)
    with pytest.raises(ValueError, match="empty"):
        pad_states([[1], []], width=4)
    with pytest.raises(ValueError):
        pad_states([], width=4)
    with pytest.raises(CacheOverflowError, match="context"):
        check_context(tiny(), 500, 100)


def test_stop_rule_from_tokenizer():
    tok = ArithTokenizer(["apples"])
    rule = stop_rule(tok, final_marker="####")
    delim = np.flatnonzero(np.asarray(rule.delimiter)).tolist()
    assert delim == tok.encode("\n")
    assert np.flatnonzero(np.asarray(rule.end)).tolist() == [tok.eos_id]
    final = set(np.flatnonzero(np.asarray(rule.final)).tolist())
    assert set(tok.encode(" ####")) <= final
    assert not set(tok.encode("apples")) & final
