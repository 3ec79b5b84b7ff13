"""Baselines against per-solution scoring and plain NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.states import append_tokens, pad_states
from qstar_jax.search.baselines import (aggregate, best_of_n, majority_vote,
                                        sample_solutions, solution_scores)

VOCAB, END, DELIM = 40, 2, (5, 6)


@pytest.fixture(scope="module")
def setup(random_critic, token_stop_rule):
    policy = init_decoder(tiny(vocab_size=VOCAB, num_layers=2), seed=0)
    critic = random_critic(VOCAB, 3)
    stop = token_stop_rule(VOCAB, END, DELIM)
    rng = np.random.default_rng(0)
    rows = [rng.integers(7, VOCAB, n).tolist() for n in (6, 3, 5)]
    tokens, lengths = pad_states(rows, width=6)
    keys = jax.random.split(jax.random.key(1), 3)
    sols = jax.jit(sample_solutions, static_argnames=(
        "num_samples", "max_tokens", "sampling"))(
        policy, tokens, lengths, keys, stop, num_samples=4, max_tokens=12,
        sampling=SamplingConfig(temperature=1.0))
    return policy, critic, stop, rows, tokens, lengths, keys, sols


def test_append_tokens_matches_python():
    rng = np.random.default_rng(1)
    a = [rng.integers(1, 9, n).tolist() for n in (4, 1, 3)]
    b = [rng.integers(1, 9, n).tolist() for n in (0, 3, 2)]
    ta, la = pad_states(a, 4)
    tb = jnp.asarray([x + [0] * (3 - len(x)) for x in b])
    out, total = append_tokens(ta, la, tb, jnp.asarray([len(x) for x in b]))
    for i in range(3):
        expected = a[i] + b[i]
        assert np.asarray(out[i, :int(total[i])]).tolist() == expected
        assert np.all(np.asarray(out[i, int(total[i]):]) == 0)


def test_solutions_and_step_ends(setup):
    *_, rows, tokens, lengths, keys, sols = setup
    conts = sols.continuations
    for b, prompt in enumerate(rows):
        for n in range(4):
            cont = np.asarray(conts.tokens[b, n, :int(conts.lengths[b, n])])
            full = prompt + cont.tolist()
            length = int(sols.lengths[b, n])
            assert np.asarray(sols.tokens[b, n, :length]).tolist() == full
            ends = [len(prompt) + i for i, t in enumerate(cont)
                    if t in DELIM or t == END or i == len(cont) - 1]
            got = np.flatnonzero(np.asarray(sols.step_end[b, n])).tolist()
            assert got == ends


@pytest.mark.parametrize("how", ["min", "max", "sum", "last"])
def test_aggregate_matches_numpy(how):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(5, 9)).astype(np.float32)
    mask = rng.random((5, 9)) < 0.4
    mask[:, 3] = True
    out = np.asarray(aggregate(jnp.asarray(scores), jnp.asarray(mask), how))
    for i in range(5):
        s = scores[i][mask[i]]
        ref = {"min": s.min(), "max": s.max(), "sum": s.sum(),
               "last": s[-1]}[how]
        np.testing.assert_allclose(out[i], ref, rtol=1e-6)


@pytest.mark.parametrize("kind,how", [("prm", "min"), ("prm", "sum"),
                                      ("qvm", None), ("orm", None)])
def test_solution_scores_equal_scoring_each_solution_alone(setup, kind, how):
    _, critic, *_, sols = setup
    scores = np.asarray(solution_scores(critic, sols, kind=kind,
                                        aggregation=how or "min"))
    for b in range(3):
        for n in range(4):
            length = int(sols.lengths[b, n])
            row = sols.tokens[b, n, :length][None]
            per_token = np.asarray(critic(row, jnp.asarray([length])))[0]
            ends = np.flatnonzero(np.asarray(sols.step_end[b, n]))
            if kind == "prm":
                s = per_token[ends]
                ref = s.min() if how == "min" else s.sum()
            else:
                ref = per_token[length - 1]
            np.testing.assert_allclose(scores[b, n], ref, rtol=1e-4,
                                       atol=1e-5)


def _nan_critic(random_critic, sols):
    """A critic whose embedding of one token is NaN, and the NaN-free
    winner of some problem that it turns into a NaN score: the token
    occurs in exactly one continuation of that problem (not in its
    prompt), where the critic's ORM score would be the highest."""
    clean = np.asarray(solution_scores(random_critic(VOCAB, 3), sols,
                                       kind="orm"))
    conts = np.asarray(sols.continuations.tokens)
    lens = np.asarray(sols.continuations.lengths)
    for b in range(conts.shape[0]):
        winner = int(np.argmax(clean[b]))
        prompt = set(np.asarray(sols.tokens[b, 0, :int(
            sols.prompt_lengths[b])]).tolist())
        seen = [set(conts[b, n, :lens[b, n]].tolist())
                for n in range(conts.shape[1])]
        others = set().union(*(s for n, s in enumerate(seen)
                               if n != winner))
        for token in sorted(seen[winner] - others - prompt):
            critic = random_critic(VOCAB, 3)
            embed = critic.backbone.embed.embedding
            embed[...] = embed[...].at[token].set(jnp.nan)
            return critic, b, winner
    raise AssertionError("no token singles out a winning solution")


@pytest.mark.parametrize("kind,how", [("orm", "min"), ("prm", "sum")])
def test_best_of_n_picks_the_highest_score(setup, kind, how):
    """best_of_n's scores are `solution_scores` of the same solutions (the
    function checked above against scoring each solution alone), and its
    pick is their NumPy argmax, ties to the lower index."""
    policy, critic, stop, _, tokens, lengths, keys, sols = setup
    again, scores, best = best_of_n(
        policy, critic, tokens, lengths, keys, stop, num_samples=4,
        max_tokens=12, sampling=SamplingConfig(temperature=1.0), kind=kind,
        aggregation=how)
    np.testing.assert_array_equal(again.tokens, sols.tokens)
    want = np.asarray(solution_scores(critic, sols, kind=kind,
                                      aggregation=how))
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(np.asarray(scores), want)
    np.testing.assert_array_equal(best, np.argmax(want, -1))
    assert len(set(np.asarray(best).tolist())) > 1  # Not one fixed index.


def test_best_of_n_never_picks_a_nan_score(setup, random_critic):
    """A NaN score (here: the would-be winner of one problem) ranks below
    every real score, and is reported as -inf."""
    policy, _, stop, _, tokens, lengths, keys, sols = setup
    critic, poisoned, winner = _nan_critic(random_critic, sols)
    raw = np.asarray(solution_scores(critic, sols, kind="orm"))
    assert np.isnan(raw[poisoned, winner])
    assert np.isfinite(raw[poisoned]).sum() >= 1
    _, scores, best = best_of_n(
        policy, critic, tokens, lengths, keys, stop, num_samples=4,
        max_tokens=12, sampling=SamplingConfig(temperature=1.0), kind="orm")
    ranked = np.where(np.isnan(raw), -np.inf, raw)
    np.testing.assert_array_equal(np.asarray(scores), ranked)
    np.testing.assert_array_equal(best, np.argmax(ranked, -1))
    assert int(best[poisoned]) != winner


def test_majority_vote():
    assert majority_vote(["3", "5", "5", None, "3"]) == "3"
    assert majority_vote(["7", None, "8", "8"]) == "8"
    assert majority_vote([None, None]) is None
