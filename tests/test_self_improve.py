"""The self-improvement loop end to end on ArithChain, at toy size.

The shipped tiny policy searches a few imagined prompts (best-of-2 samples:
the loop's searcher is any `solve` method), a random critic filters them,
one round of SFT mixes them with gold data. Checked: kept data never holds
held-out problems, the filter decides the same with a falsified answer key
(it never reads it) and refuses inputs with answers, and a round killed in
its SFT resumes to bit-identical parameters.
"""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from qstar_jax.learning import imagination as im
from qstar_jax.learning import self_improve as si
from qstar_jax.learning.arithchain_text import parse_question
from qstar_jax.learning.trajectory_filter import (FilterConfig, Trajectory,
                                                  filter_trajectories,
                                                  score_trajectories,
                                                  search_prompts)
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.solver import BestOfNConfig, GreedyConfig, SolverModels
from qstar_jax.tasks.arithchain import ArithChain, split_of
from qstar_jax.tasks.tiny_policy import load_tiny_policy
from qstar_jax.training.trainer import TrainConfig

PROMPTS = 6


@pytest.fixture(scope="module")
def setup(random_critic):
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    prm = random_critic(tokenizer.vocab_size, seed=3)
    models = SolverModels(policy=policy, tokenizer=tokenizer, prm=prm,
                          add_bos=True)
    variations = (im.ArithChainVariation(),
                  im.ArithChainVariation(num_steps_min=2, num_steps_max=4,
                                         templates="extra"))

    def imagine(r, current):
        del current
        return im.arithchain_variations(variations, PROMPTS, seed=r,
                                        reference=task_config)

    search = si.SearchSpec(method="best_of_n", batch_size=PROMPTS,
                           config=BestOfNConfig(
                               num_samples=2, max_tokens=96,
                               prompt_width=96, critic="prm",
                               sampling=SamplingConfig(temperature=0.7)))
    config = si.LoopConfig(
        rounds=1, filter=FilterConfig(critic="prm", threshold=-1e9,
                                      width=192, batch_size=PROMPTS),
        sft=TrainConfig(learning_rate=1e-3, warmup_steps=1, total_steps=6,
                        batch_size=4, checkpoint_every=2, log_every=2),
        original_share=0.5, max_len=160, seed=0)
    evaluation = si.Evaluation(
        problems=task.problems("test")[:4],
        greedy=si.SearchSpec(method="greedy", batch_size=4,
                             config=GreedyConfig(max_tokens=96,
                                                 prompt_width=96)))

    def held_out(question):
        return split_of(parse_question(question), task_config) == "test"

    kwargs = dict(imagine=imagine, search=search, config=config,
                  originals=task.problems("train")[:500],
                  held_out=held_out, progress=False)
    return task, models, evaluation, kwargs


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """An interrupted-then-resumed run and an uninterrupted one."""
    task, models, evaluation, kwargs = setup
    root = tmp_path_factory.mktemp("self_improve")
    killed = str(root / "killed")
    first = si.run_self_improvement(task, models, evaluation=evaluation,
                                    run_dir=killed, stop_sft_at=(1, 3),
                                    **kwargs)
    resumed = si.run_self_improvement(task, models, evaluation=evaluation,
                                      run_dir=killed, **kwargs)
    straight = si.run_self_improvement(task, models, evaluation=None,
                                       run_dir=str(root / "straight"),
                                       **kwargs)
    return root, first, resumed, straight


def test_killed_round_resumes_to_identical_parameters(setup, runs):
    _, models, _, _ = setup
    root, first, resumed, straight = runs
    assert not first.complete and len(first.metrics) == 1
    assert resumed.complete and straight.complete
    steps = [json.loads(line)["step"] for line in open(
        root / "killed" / "round_1" / "sft_log.jsonl")]
    assert steps == [2, 3, 4, 6]  # Killed after 3; resumed from 2.
    for a, b in zip(_params(resumed.policy), _params(straight.policy)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = any(not np.array_equal(np.asarray(a), np.asarray(b))
                  for a, b in zip(_params(resumed.policy),
                                  _params(models.policy)))
    assert changed
    record = resumed.metrics[1]
    assert record["sft"]["steps"] == 6
    assert record["eval"]["greedy"]["n"] == 4
    assert "accuracy_ci95" in record["eval"]["greedy"]
    assert resumed.metrics[0]["eval"]["greedy"]["n"] == 4
    # Resuming a finished run reloads it.
    again = si.run_self_improvement(setup[0], models, evaluation=None,
                                    run_dir=str(root / "killed"),
                                    **setup[3])
    for a, b in zip(_params(again.policy), _params(resumed.policy)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_kept_data_never_holds_held_out_problems(setup, runs):
    task, _, _, _ = setup
    root = runs[0]
    round_dir = root / "straight" / "round_1"
    prompts = im.read_prompts(str(round_dir))
    kept = si.read_trajectories(str(round_dir / "kept.jsonl"))
    assert len(prompts) == PROMPTS and kept
    test_signatures = {p.program.signature()
                       for p in task.problems("test")}
    for t in kept:
        program = parse_question(t.question)
        assert split_of(program, task.config) == "train"
        assert program.signature() not in test_signatures
    analysis = json.load(open(round_dir / "analysis.json"))
    assert analysis["kept_held_out"] == 0
    assert analysis["filter"]["kept"] == len(kept)
    metrics = json.load(open(round_dir / "metrics.json"))
    assert metrics["sft_data"]["kept"] == len(kept)
    assert metrics["sft_data"]["original"] == len(kept)


def test_filter_never_reads_the_answer_key(setup, runs):
    """The same prompts with every answer falsified give the same
    trajectories, scores and kept set; only the analysis changes."""
    task, models, _, kwargs = setup
    root = runs[0]
    source = root / "straight" / "round_1"
    falsified = root / "falsified" / "round_1"
    os.makedirs(falsified)
    shutil.copy(source / im.PROMPTS_FILE, falsified / im.PROMPTS_FILE)
    answers = json.load(open(source / im.ANSWERS_FILE))
    answers["answers"] = {uid: "-12345" for uid in answers["answers"]}
    json.dump(answers, open(falsified / im.ANSWERS_FILE, "w"))
    out = si.run_self_improvement(task, models, evaluation=None,
                                  run_dir=str(root / "falsified"),
                                  stop_sft_at=(1, 0), **kwargs)
    assert not out.complete
    for name in ("trajectories.jsonl", "kept.jsonl"):
        assert (open(falsified / name).read()
                == open(source / name).read())
    truth = json.load(open(source / "analysis.json"))["filter"]
    lies = json.load(open(falsified / "analysis.json"))["filter"]
    assert lies["correct"] == 0 and lies["kept"] == truth["kept"]


def test_search_and_filter_refuse_answers(setup):
    task, models, _, kwargs = setup
    problem = task.problems("train")[0]
    with pytest.raises(TypeError, match="search_prompts"):
        search_prompts(task, [problem], method="greedy", models=models,
                       config=GreedyConfig(), key=0)
    with pytest.raises(TypeError, match="filter_trajectories"):
        filter_trajectories([problem], threshold=0.0)
    for field in dataclasses.fields(Trajectory):
        assert "gold" not in field.name and field.name != "reward"


def test_scores_match_a_direct_critic_pass(setup):
    """PRM 'min' and ORM-style 'last' scores against the critic run on each
    trajectory alone."""
    task, models, _, _ = setup
    tok = models.tokenizer
    prompt = im.Prompt(uid="u", question=task.problems("train")[1].question,
                       source="x")
    text = "\n".join(task.problems("train")[1].solution_steps)
    trajs = [Trajectory(uid="u", question=prompt.question, text=text,
                        finished=True, answer="1"),
             Trajectory(uid="v", question=prompt.question, text="",
                        finished=False, answer=None)]
    ids = tok.encode(prompt.question + "\n", add_bos=True)
    start = len(ids)
    ids = ids + tok.encode(text)
    direct = np.asarray(models.prm(np.asarray([ids], np.int32),
                                   np.asarray([len(ids)], np.int32)))[0]
    newline = tok.encode("\n")[-1]
    ends = [i for i in range(start, len(ids))
            if ids[i] == newline or i == len(ids) - 1]
    for aggregation, want in (("min", min(direct[i] for i in ends)),
                              ("last", direct[len(ids) - 1])):
        config = FilterConfig(critic="prm", aggregation=aggregation,
                              width=192, batch_size=4)
        scored = score_trajectories(task, trajs, models=models,
                                    config=config)
        assert scored[0].score == pytest.approx(float(want), abs=1e-4)
        assert scored[1].score is None
    kept = filter_trajectories(scored, threshold=float(want) - 1e-3)
    assert [t.uid for t in kept] == ["u"]
    assert not filter_trajectories(scored, threshold=float(want) + 1e-3)


def test_policy_scores_and_top_share(setup):
    """'policy': the mean log-probability of the solution tokens, against
    a direct forward pass; top_share keeps the best scored."""
    from qstar_jax.sampling.decode import forward_logits
    task, models, _, _ = setup
    tok = models.tokenizer
    problems = task.problems("train")[2:5]
    trajs = [Trajectory(uid=p.uid, question=p.question,
                        text="\n".join(p.solution_steps), finished=True,
                        answer=p.answer) for p in problems]
    config = FilterConfig(critic="policy", width=192, batch_size=2)
    scored = score_trajectories(task, trajs, models=models, config=config)
    for p, t in zip(problems, scored):
        prompt = tok.encode(p.question + "\n", add_bos=True)
        ids = prompt + tok.encode(t.text)
        logits = np.asarray(forward_logits(
            models.policy, np.asarray([ids], np.int32),
            np.asarray([len(ids)], np.int32)))[0].astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True))
                               .sum(-1, keepdims=True)) - logits.max(
                                   -1, keepdims=True)
        want = np.mean([logp[i - 1, ids[i]]
                        for i in range(len(prompt), len(ids))])
        assert t.score == pytest.approx(want, abs=1e-4)
    order = sorted(range(3), key=lambda i: -scored[i].score)
    kept = filter_trajectories(scored, threshold=-1e9, top_share=0.5)
    assert [t.uid for t in kept] == [scored[i].uid for i in sorted(
        order[:2])]
    assert filter_trajectories(scored, threshold=-1e9, top_share=0.3) == [
        scored[order[0]]]
    with pytest.raises(ValueError, match="top_share"):
        FilterConfig(top_share=0.0)


def test_one_search_per_round(setup, tmp_path):
    task, models, evaluation, kwargs = setup
    spec = kwargs["search"]
    hotter = dataclasses.replace(spec, config=dataclasses.replace(
        spec.config, sampling=SamplingConfig(temperature=1.0)))
    assert si.round_searches(spec, 3) == (spec,) * 3
    assert si.round_searches([spec, hotter], 2) == (spec, hotter)
    with pytest.raises(ValueError, match="one per round"):
        si.round_searches([spec, hotter], 3)
    with pytest.raises(ValueError, match="one per round"):
        si.round_searches([spec, "qstar"], 2)
    run_dir = tmp_path / "refused"          # rounds=1: two specs refused
    with pytest.raises(ValueError, match="one per round"):  # before any work.
        si.run_self_improvement(task, models, evaluation=evaluation,
                                run_dir=str(run_dir),
                                **{**kwargs, "search": [spec, hotter]})
    assert not run_dir.exists()
