"""`solve`: every method end to end on a task defined here, not in the package.

The task (`ParityChain`) asks ArithChain questions and grades only the
parity of the '####' answer, so its grading differs from anything the
package ships. The shipped fast tiny policy (53.6% greedy on 6-step
ArithChain, most 2-3-step problems right) answers; critics are one-layer
decoders with random heads. Every record is checked against the task's own
grading of the record's text, the summary against the records, and greedy
decoding and Q* against the same computation wired by hand.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.models.config import tiny
from qstar_jax.models.critic import Critic, last_token_scores
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig
from qstar_jax.sampling.states import (CacheOverflowError, pad_states,
                                       task_stop_rule)
from qstar_jax.search import (AlphaLLMConfig, AStarConfig, BeamConfig,
                              MCTSConfig, QStarConfig, QStarModels,
                              qstar_search, trajectory_steps)
from qstar_jax.solver import (BestOfNConfig, GreedyConfig,
                              MajorityVoteConfig, MCTSSolveConfig,
                              SolverModels, solution_end, solve)
from qstar_jax.tasks import grading
from qstar_jax.tasks.arithchain import ArithChain, ArithChainConfig
from qstar_jax.tasks.base import Problem, Task
from qstar_jax.tasks.tiny_policy import (greedy_solutions,
                                         load_tiny_fast_policy)


class ParityChain:
    """Is the result of an ArithChain story even or odd? (a new task)"""

    name = "parity_chain"
    step_delimiter = "\n"
    final_marker = "####"

    def __init__(self):
        self.chain = ArithChain(ArithChainConfig(num_steps_min=2,
                                                 num_steps_max=3))

    def problems(self, split):
        return [Problem(uid=f"parity-{p.uid}", question=p.question,
                        answer=self._parity(p.answer),
                        solution_steps=p.solution_steps)
                for p in self.chain.problems(split)[:12]]

    @staticmethod
    def _parity(number: str | None) -> str | None:
        if number is None or not number.lstrip("-").isdigit():
            return None
        return "even" if int(number) % 2 == 0 else "odd"

    def format_prompt(self, problem):
        return problem.question + "\n"

    def format_solution(self, problem):
        return "\n".join(problem.solution_steps)

    def is_finished(self, solution):
        return "####" in solution

    def extract_answer(self, solution):
        return self._parity(grading.extract_answer(solution, mode="hash"))

    def reward(self, problem, solution):
        return float(self.extract_answer(solution) == problem.answer)

    def check_step(self, step):
        return self.chain.check_step(step)


SAMPLING = SamplingConfig(temperature=0.7)
PROPOSER = ProposerConfig(num_steps=3, num_samples=4, max_step_tokens=14,
                          sampling=SAMPLING)
CONFIGS = {
    "greedy": GreedyConfig(max_tokens=48, prompt_width=80),
    "best_of_n": BestOfNConfig(num_samples=4, max_tokens=48, prompt_width=80,
                               sampling=SAMPLING, critic="orm"),
    "majority_vote": MajorityVoteConfig(num_samples=4, max_tokens=48,
                                        prompt_width=80, sampling=SAMPLING),
    "beam": BeamConfig(width=2, max_steps=5, proposer=PROPOSER,
                       state_width=128),
    "qstar": QStarConfig(search=AStarConfig(num_nodes=32, max_expansions=8),
                         proposer=PROPOSER, state_width=128),
    "mcts": MCTSSolveConfig(mcts=AlphaLLMConfig(
        search=MCTSConfig(num_nodes=32, num_simulations=24, parallel=2,
                          max_depth=5, c_min=(2, 1), c_max=(2, 1)),
        num_candidates=2, max_step_tokens=14, sampling=SAMPLING,
        state_width=128, orm_weight=0.0), answer="best_outcome"),
}
BATCH = 4


def _critic(vocab: int, seed: int) -> Critic:
    critic = Critic(tiny(vocab_size=vocab, num_layers=1), rngs=nnx.Rngs(seed))
    critic.head.kernel[...] = jax.random.normal(
        jax.random.key(seed), critic.head.kernel[...].shape)
    return critic


@pytest.fixture(scope="module")
def setup():
    policy, tokenizer, _ = load_tiny_fast_policy()
    vocab = tokenizer.vocab_size
    models = SolverModels(policy=policy, tokenizer=tokenizer,
                          prm=_critic(vocab, 1), qvm=_critic(vocab, 2),
                          value=_critic(vocab, 3), orm=_critic(vocab, 4),
                          add_bos=True)
    task = ParityChain()
    return models, task, task.problems("test")[:6]


@pytest.fixture(scope="module")
def reports(setup):
    models, task, problems = setup
    return {}


def _report(reports, setup, method):
    if method not in reports:
        models, task, problems = setup
        reports[method] = solve(task, problems, method=method, models=models,
                                config=CONFIGS[method], key=7,
                                batch_size=BATCH, progress=False)
    return reports[method]


@pytest.mark.parametrize("method", list(CONFIGS))
def test_every_method_end_to_end_graded_by_the_task(setup, reports, method):
    models, task, problems = setup
    assert isinstance(task, Task)
    report = _report(reports, setup, method)
    assert report.method == method and len(report.records) == len(problems)
    for problem, record in zip(problems, report.records):
        assert record.uid == problem.uid
        if record.finished:
            assert task.is_finished(record.text)
            assert record.answer == task.extract_answer(record.text)
            assert record.reward == task.reward(problem, record.text)
        else:
            assert (record.answer, record.reward) == (None, 0.0)
        assert record.generated_tokens > 0 and record.model_calls >= 1
    rewards = [r.reward for r in report.records]
    summary = report.summary
    assert summary["n"] == len(problems)
    assert summary["accuracy"] == pytest.approx(np.mean(rewards))
    lo, hi = summary["accuracy_ci95"]
    assert lo <= summary["accuracy"] <= hi
    assert summary["tokens_per_problem"] == pytest.approx(
        np.mean([r.generated_tokens for r in report.records]))
    assert summary["model_calls_per_problem"] == pytest.approx(
        np.mean([r.model_calls for r in report.records]))
    assert summary["finished"] == pytest.approx(
        np.mean([r.finished for r in report.records]))
    # The policy solves most 2-3-step problems; a wiring error (prompt,
    # BOS, stop rule, decoding) would leave none finished or right.
    assert summary["finished"] >= 0.5
    assert summary["accuracy"] >= 0.5


def test_greedy_equals_decoding_by_hand(setup, reports):
    models, task, problems = setup
    report = _report(reports, setup, "greedy")
    texts = greedy_solutions(models.policy, models.tokenizer, task.chain,
                             problems, batch_size=BATCH, prompt_width=80,
                             max_tokens=48)
    assert [r.text for r in report.records] == texts


def test_qstar_equals_the_search_wired_by_hand(setup, reports):
    """Prompts, stop rule and per-problem keys as documented, then the
    best trajectory decoded: the same texts and statistics."""
    models, task, problems = setup
    report = _report(reports, setup, "qstar")
    tok = models.tokenizer
    prompts = [tok.encode(task.format_prompt(p), add_bos=True)
               for p in problems[:BATCH]]
    tokens, lengths = pad_states(prompts, width=128)
    base = jax.random.key(7)
    keys = jnp.stack([jax.random.fold_in(
        base, zlib.crc32(p.uid.encode()) & 0x7FFFFFFF)
        for p in problems[:BATCH]])
    config = CONFIGS["qstar"]
    out = jax.jit(qstar_search, static_argnames="config")(
        QStarModels(policy=models.policy, prm=models.prm, qvm=models.qvm),
        tokens, lengths, keys, task_stop_rule(tok, task), config=config)
    for b, record in enumerate(report.records[:BATCH]):
        best = int(out.best[b])
        text = tok.decode(sum(trajectory_steps(out.tree, b, best), [])) \
            if best >= 0 else ""
        assert record.text == text
        assert record.details["expansions"] == int(out.stats.expansions[b])
        assert record.generated_tokens == int(out.stats.generated_tokens[b])


def test_best_of_n_record_holds_the_chosen_samples_orm_score(setup,
                                                             reports):
    models, task, problems = setup
    report = _report(reports, setup, "best_of_n")
    tok = models.tokenizer
    seqs = [tok.encode(task.format_prompt(p), add_bos=True)
            + tok.encode(r.text, add_eos=True)
            for p, r in zip(problems, report.records) if r.finished]
    tokens, lengths = pad_states(seqs, width=max(map(len, seqs)))
    scores = np.asarray(last_token_scores(models.orm, tokens, lengths))
    got = [r.details["score"] for r in report.records if r.finished]
    np.testing.assert_allclose(got, scores, rtol=1e-4, atol=1e-4)
    for r in report.records:
        assert 1 <= r.details["finished_samples"] <= 4


def test_votes_and_mcts_answers_are_consistent(setup, reports):
    models, task, problems = setup
    for r in _report(reports, setup, "majority_vote").records:
        assert (r.details["votes"] >= 1) == (r.answer is not None)
        assert r.details["answers"] <= r.details["finished_samples"] <= 4
        votes = r.details["answer_votes"]
        assert len(votes) == r.details["answers"]
        assert sum(votes.values()) <= r.details["finished_samples"]
        if r.answer is not None:
            assert votes[r.answer] == r.details["votes"] == max(
                votes.values())
    mcts = _report(reports, setup, "mcts")
    for r in mcts.records:
        assert r.finished == (r.details["node"] >= 0)
        assert r.details["status"] in ("done", "full")


@pytest.mark.parametrize("method", ["majority_vote", "qstar"])
def test_a_problems_result_does_not_depend_on_its_batch(setup, reports,
                                                        method):
    models, task, problems = setup
    report = _report(reports, setup, method)
    order = [4, 0, 5, 2, 1, 3]
    shuffled = solve(task, [problems[i] for i in order], method=method,
                     models=models, config=CONFIGS[method], key=7,
                     batch_size=BATCH, progress=False)
    for i, record in zip(order, shuffled.records):
        assert record == report.records[i]
    other = solve(task, problems, method=method, models=models,
                  config=CONFIGS[method], key=8, batch_size=BATCH,
                  progress=False)
    if method == "majority_vote":     # Sampled: another key, other texts.
        assert [r.text for r in other.records] != \
            [r.text for r in report.records]


def test_cut_solutions_are_not_finished_and_earn_nothing(setup):
    models, task, problems = setup
    report = solve(task, problems[:2], method="greedy", models=models,
                   config=GreedyConfig(max_tokens=12, prompt_width=80),
                   batch_size=BATCH, progress=False)
    for record in report.records:
        assert not record.finished and record.reward == 0.0
        assert record.text and record.answer is None
    assert report.summary["finished"] == 0.0


def test_bad_calls_are_clear_errors(setup):
    models, task, problems = setup
    with pytest.raises(CacheOverflowError, match="problem 'parity-arithchain"
                       "-test-0' has .* tokens but the prompt width is 10"):
        solve(task, problems, method="greedy", models=models,
              config=GreedyConfig(prompt_width=10), progress=False)
    with pytest.raises(CacheOverflowError, match="exceeds the model's "
                       "context of 256"):
        solve(task, problems, method="qstar", models=models,
              config=QStarConfig(search=AStarConfig(), proposer=PROPOSER,
                                 state_width=250), progress=False)
    with pytest.raises(ValueError, match=r"models.qvm is None; this method "
                       "with this config needs models.prm, models.qvm"):
        solve(task, problems, method="qstar", progress=False,
              models=SolverModels(policy=models.policy,
                                  tokenizer=models.tokenizer,
                                  prm=models.prm),
              config=CONFIGS["qstar"])
    with pytest.raises(ValueError, match="takes a QStarConfig, got "
                       "BeamConfig"):
        solve(task, problems, method="qstar", models=models,
              config=BeamConfig(), progress=False)
    with pytest.raises(ValueError, match="unknown method 'astar'"):
        solve(task, problems, method="astar", models=models)
    with pytest.raises(ValueError, match="no problems"):
        solve(task, [], method="greedy", models=models)


def test_stop_rule_comes_from_the_task(setup):
    models, task, _ = setup
    tok = models.tokenizer
    stop = task_stop_rule(tok, task)
    texts = tok.token_texts()
    assert [texts[i] for i in np.flatnonzero(stop.final)] == [" ####",
                                                               "####"]
    assert np.flatnonzero(stop.end).tolist() == [tok.eos_id]

    class NoMarker(ParityChain):
        final_marker = None

    assert not np.asarray(task_stop_rule(tok, NoMarker()).final).any()

    class SpreadMarker(ParityChain):
        final_marker = "Answer:"        # No single token holds it.

    with pytest.raises(ValueError, match="final_marker='Answer:' is in no "
                       "token"):
        task_stop_rule(tok, SpreadMarker())


def test_solution_end_cuts_after_the_final_step():
    vocab = 8
    none = np.zeros(vocab, bool)
    stop = (none.copy(), none.copy(), none.copy())
    stop[0][3] = True                       # Delimiter.
    stop[1][2] = True                       # End.
    stop[2][4] = True                       # Final-answer marker.
    assert solution_end([5, 3, 4, 6, 3, 5, 5, 2], stop) == (5, True)
    assert solution_end([5, 3, 6, 2, 5], stop) == (4, True)
    assert solution_end([5, 3, 4, 6, 6], stop) == (5, False)   # Cut.
    assert solution_end([5, 3, 6, 6], stop) == (4, False)      # No end.
    assert solution_end([4, 6, 2], stop) == (3, True)
