"""Step-level beam search against a plain-Python beam search.

The reference proposes steps for one beam at a time (same keys), scores
each child in its own critic pass and sorts candidates with Python.
"""

import jax
import numpy as np
import pytest

from qstar_jax.models.critic import last_token_scores
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import pad_states
from qstar_jax.search.beam import BeamConfig, beam_search

VOCAB, END, DELIM = 40, 2, (5, 6, 7, 8)
WORST = -1e30


@pytest.fixture(scope="module")
def setup(random_qstar_models, token_stop_rule):
    models = random_qstar_models(VOCAB)
    stop = token_stop_rule(VOCAB, END, DELIM)
    rows = [[10, 11, 12], [20, 21]]
    return models, stop, rows


def _reference(models, stop, rows, keys, config):
    """Beam search for each problem separately, in Python."""
    critic = models.prm if config.score == "prm" else models.qvm
    w, p = config.width, config.state_width
    mode = config.truncated_steps
    propose = jax.jit(propose_steps, static_argnames="config")
    out = []
    for b, prompt in enumerate(rows):
        counts = dict(truncated=0, overflow=0, calls=0)
        beams = [dict(tokens=prompt, score=0.0 if i == 0 else WORST,
                      finished=False, steps=0) for i in range(w)]
        for i in range(config.max_steps):
            live = [x["score"] > WORST and not x["finished"] for x in beams]
            if not any(live):
                break
            counts["calls"] += 1
            keys_i = jax.random.split(jax.random.fold_in(keys[b], i), w)
            cands = []
            for j, beam in enumerate(beams):
                tok, ln = pad_states([beam["tokens"]], width=p)
                props = propose(models.policy, tok, ln, keys_i[j:j + 1],
                                stop, config=config.proposer)
                for k in range(config.proposer.num_steps):
                    n = int(props.lengths[0, k])
                    child = beam["tokens"] + np.asarray(
                        props.tokens[0, k, :n]).tolist()
                    valid = bool(props.valid[0, k])
                    cut = valid and bool(props.truncated[0, k])
                    if cut and live[j]:
                        counts["truncated"] += 1
                    kept = valid and not (cut and mode == "drop")
                    if kept and live[j] and len(child) > p:
                        counts["overflow"] += 1
                    ok = kept and live[j] and len(child) <= p
                    score = WORST
                    if ok:
                        ct, cl = pad_states([child], width=len(child))
                        s = float(last_token_scores(critic, ct, cl)[0])
                        if config.score == "prm" and beam["steps"] > 0:
                            s = min(beam["score"], s)
                        score = s
                    done = ((bool(props.finished[0, k]) and not cut)
                            or (cut and mode == "finish"))
                    cands.append(dict(tokens=child[:p], score=score,
                                      finished=ok and done,
                                      steps=beam["steps"] + 1))
            for beam in beams:
                cands.append(dict(beam, score=beam["score"]
                                  if beam["finished"] else WORST))
            order = sorted(range(len(cands)), key=lambda c: -cands[c]["score"])
            beams = [cands[c] for c in order[:w]]
        out.append((beams, counts))
    return out


@pytest.mark.parametrize("score,mode,width", [
    ("prm", "drop", 24), ("prm", "finish", 24), ("qvm", "continue", 8)])
def test_beam_search_matches_python_reference(setup, score, mode, width):
    """Beams, scores, finished flags and the counts of truncated steps and
    overflowing states equal the reference for every `truncated_steps`
    mode (state width 8: children overflow)."""
    models, stop, rows = setup
    config = BeamConfig(
        width=2, max_steps=3, score=score, aggregation="min",
        state_width=width, truncated_steps=mode,
        proposer=ProposerConfig(num_steps=2, num_samples=3, max_step_tokens=4,
                                sampling=SamplingConfig(temperature=1.0)))
    tokens, lengths = pad_states(rows, width=3)
    keys = jax.random.split(jax.random.key(7), 2)
    result = jax.jit(beam_search, static_argnames="config")(
        models, tokens, lengths, keys, stop, config=config)
    reference = _reference(models, stop, rows, keys, config)
    assert int(np.max(result.steps)) >= 2, "the search went past one step"
    assert int(np.sum(result.truncated)) > 0, "no step was cut"
    if width == 8:
        assert int(np.sum(result.overflow)) > 0, "no state overflowed"
    for b in range(2):
        counts = reference[b][1]
        assert int(result.truncated[b]) == counts["truncated"]
        assert int(result.overflow[b]) == counts["overflow"]
        assert int(result.model_calls[b]) == counts["calls"]
        for w in range(2):
            ref = reference[b][0][w]
            n = int(result.lengths[b, w])
            assert np.asarray(result.tokens[b, w, :n]).tolist() == \
                ref["tokens"]
            np.testing.assert_allclose(float(result.scores[b, w]),
                                       ref["score"], rtol=1e-4, atol=1e-5)
            assert bool(result.finished[b, w]) == ref["finished"]
            assert int(result.steps[b, w]) == ref["steps"]


def test_bad_beam_config():
    with pytest.raises(ValueError):
        BeamConfig(score="orm")
