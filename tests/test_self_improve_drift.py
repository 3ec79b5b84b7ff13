"""experiments/self_improve_drift.py on a hand-made round of a tiny Q* run:
the gold-path states it builds, its count of the loop's right answers, and
its step statistics against the greedy solver (at temperature 0 the
proposer's most likely step is the greedy step)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from qstar_jax import configs, results
from qstar_jax.learning import imagination as im
from qstar_jax.learning.arithchain_text import parse_question
from qstar_jax.learning.self_improve import write_trajectories
from qstar_jax.learning.trajectory_filter import Trajectory
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.solver import GreedyConfig, SolverModels, solve
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.base import Problem
from qstar_jax.tasks.tiny_policy import load_tiny_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "experiments"))
import self_improve  # noqa: E402
import self_improve_drift as drift  # noqa: E402

PROMPTS = 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A Q* run's results JSON and its round 1: prompts 0-1 searched right,
    2-3 wrong; the proposer at temperature 0."""
    root = tmp_path_factory.mktemp("drift")
    policy, tokenizer, config = load_tiny_policy()
    imagined = im.arithchain_variations((im.ArithChainVariation(),), PROMPTS,
                                        seed=5, reference=config)
    round_dir = os.path.join(root, "run", "search", "round_1")
    im.write_imagined(round_dir, imagined)
    write_trajectories(os.path.join(round_dir, "trajectories.jsonl"), [
        Trajectory(uid=p.uid, question=p.question, finished=True,
                   text=f"1 + 1 = 2\n#### {answer}", answer=answer)
        for p, answer in zip(imagined.prompts, [
            imagined.answers[p.uid] for p in imagined.prompts[:2]]
            + ["100000"] * (PROMPTS - 2))])
    base = self_improve.SelfImproveExperiment()
    qstar = dataclasses.replace(
        base.qstar, search=dataclasses.replace(
            base.qstar.search, num_nodes=16, max_expansions=4),
        proposer=dataclasses.replace(
            base.qstar.proposer, num_steps=2, num_samples=2,
            max_step_tokens=12, sampling=SamplingConfig(temperature=0.0)))
    exp = dataclasses.replace(
        base, searcher="qstar", run_dir=os.path.join(root, "run"),
        critic_dir="", prm="qvm", qvm="qvm", qstar=qstar, search_batch=4,
        tool_weight=1.0)
    run_results = os.path.join(root, "run.json")
    results.write_results(run_results, name="tiny", methods={},
                          config=configs.config_to_dict(exp))
    out = os.path.join(root, "drift.json")
    subprocess.run([sys.executable, "experiments/self_improve_drift.py",
                    "--run_results", run_results, "--round", "1",
                    "--prompts", str(PROMPTS), "--temperatures", "0.5",
                    "--results", out], cwd=ROOT, check=True,
                   capture_output=True,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    with open(out) as f:
        report = json.load(f)
    task = ArithChain(config)
    problems = [Problem(uid=p.uid, question=p.question,
                        answer=imagined.answers[p.uid],
                        solution_steps=parse_question(p.question).steps())
                for p in imagined.prompts]
    models = SolverModels(policy=policy, tokenizer=tokenizer, add_bos=True)
    return report, task, problems, models


def test_gold_path_states_are_the_question_and_its_first_steps():
    _, tokenizer, config = load_tiny_policy()
    problem = Problem(uid="p", question="Ann has 3 cats. Ann gets 2 more "
                      "cats. How many cats does Ann have now?", answer="5",
                      solution_steps=("3 + 2 = 5", "#### 5"))
    tokens, lengths, gold, depth = drift.gold_path_states(
        tokenizer, [problem], 96)
    texts = [tokenizer.decode(t[:n]) for t, n in zip(tokens, lengths)]
    assert texts == [problem.question + "\n",
                     problem.question + "\n3 + 2 = 5\n"]
    assert gold == ["3 + 2 = 5", "#### 5"] and list(depth) == [0, 1]


def test_counts_and_methods(tiny_run):
    report, _, problems, _ = tiny_run
    assert report["extra"]["loop_q_star_right_on_these_prompts"] == 0.5
    assert set(report["methods"]) == {"shipped, Q*", "shipped, greedy",
                                      "shipped, Q* at temperature 0.5"}
    steps = report["extra"]["gold_path_steps"]["shipped"]
    assert steps["all"]["states"] == sum(len(p.solution_steps)
                                         for p in problems)
    assert steps["all"]["distinct_steps"] == 1.0  # Temperature 0.
    assert set(steps["by_depth"]) == {
        str(j) for j in range(max(len(p.solution_steps) for p in problems))}


def test_policy_top_step_is_the_greedy_step(tiny_run):
    report, task, problems, models = tiny_run
    greedy = solve(task, problems, method="greedy", models=models,
                   config=GreedyConfig(max_tokens=96, prompt_width=96),
                   key=0, batch_size=PROMPTS, progress=False)
    first_right = [r.text.split("\n")[0].strip() == p.solution_steps[0]
                   for r, p in zip(greedy.records, problems)]
    depth0 = report["extra"]["gold_path_steps"]["shipped"]["by_depth"]["0"]
    assert depth0["gold_is_policy_top"] == pytest.approx(
        sum(first_right) / len(problems))
    assert depth0["gold_proposed"] == depth0["gold_is_policy_top"]
