"""Why a later round's search is right less often: one round's prompts
searched by the shipped policy and by the fine-tuned policy that searched
them in the loop.

In the self-improvement runs Q* is right less often on round 2's prompts
than on round 1's (75.6% against 81.1%), with prompts drawn from the same
generator. This analysis holds the prompts fixed and swaps the policy:

* Q* and greedy on the first `prompts` of round `round`, with the shipped
  policy and with round `round - 1`'s policy (the one the loop searched
  them with), the run's Q* settings and key;
* at every state on each prompt's gold path (the question plus its first
  j gold steps), one Q* expansion (`qstar.expand_states`: the proposer's
  K distinct steps of M samples, the critics' scores, the calculator's
  penalty): how many distinct steps are proposed, how often the gold next
  step is among them (coverage), how often it is the policy's most likely
  step, and how often it is the step the QVM scores highest where it is
  proposed (the critic's pick).

It reads the round's answer key and the questions' gold programs, so it is
analysis, never a filter.

Usage (the README's run, on the larger run's round 2):
  python experiments/self_improve_drift.py \
      --run_results experiments/results/self_improve_qstar_long.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from qstar_jax import configs, results  # noqa: E402
from qstar_jax.learning import imagination as im  # noqa: E402
from qstar_jax.learning.arithchain_text import parse_question  # noqa: E402
from qstar_jax.learning.self_improve import (load_policy,  # noqa: E402
                                             read_trajectories)
from qstar_jax.sampling.states import pad_states, task_stop_rule  # noqa
from qstar_jax.search.qstar import QStarModels, expand_states  # noqa: E402
from qstar_jax.solver import GreedyConfig, solve  # noqa: E402
from qstar_jax.tasks.base import Problem  # noqa: E402

from self_improve import (SelfImproveExperiment, at_temperature,  # noqa
                          load_models, qstar_searches, with_tool)

GREEDY = GreedyConfig(max_tokens=96, prompt_width=96)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftProbe:
    """Settings (one flag per field).

    Attributes:
      run_results: the loop run's results JSON (its config: run_dir, Q*,
        critics, seed).
      round: the round whose prompts are searched (>= 1).
      prompts: how many of them (the first; a multiple of the run's search
        batch keeps the loop's batches).
      temperatures: also Q* at these proposer temperatures (each policy;
        the run's is always there).
      seed: the expansions' PRNG seed.
      results: this analysis's JSON.
    """

    run_results: str = "experiments/results/self_improve_qstar_long.json"
    round: int = 2
    prompts: int = 512
    temperatures: tuple[float, ...] = ()
    seed: int = 0
    results: str = "experiments/results/self_improve_drift.json"


def gold_path_states(tokenizer, problems: list[Problem], width: int):
    """Every state on each problem's gold path and its gold next step.

    Returns:
      tokens [S, width] and lengths [S] (question, newline, the first j
      gold steps each with its newline), the gold next steps (S texts) and
      each state's depth j.
    """
    ids, gold, depth = [], [], []
    for problem in problems:
        for j, step in enumerate(problem.solution_steps):
            text = problem.question + "\n" + "".join(
                s + "\n" for s in problem.solution_steps[:j])
            ids.append(tokenizer.encode(text, add_bos=True))
            gold.append(step)
            depth.append(j)
    tokens, lengths = pad_states(ids, width, tokenizer.pad_id)
    return np.asarray(tokens), np.asarray(lengths), gold, np.asarray(depth)


def step_statistics(models: QStarModels, stop, config, tokenizer, states,
                    *, batch: int, key: jax.Array) -> dict:
    """One Q* expansion at each gold-path state (see the module docstring).

    Returns:
      distinct steps per state, coverage of the gold step, the policy's
      top step is gold, the QVM's top proposed step is gold (among states
      where the gold step is proposed), overall and by depth.
    """
    tokens, lengths, gold, depth = states
    expand = jax.jit(lambda m, t, n, k: expand_states(m, stop, config,
                                                      t, n, k))
    rows = {"distinct": [], "covered": [], "policy_top": [], "qvm_top": []}
    for start in tqdm(range(0, len(gold), batch), desc="expansions"):
        stop_at = min(start + batch, len(gold))
        take = np.arange(start, start + batch) % len(gold)  # Fixed shape.
        keys = jax.random.split(jax.random.fold_in(key, start), batch)
        out = jax.device_get(expand(models, tokens[take], lengths[take],
                                    keys))
        for row in range(stop_at - start):
            valid = out.valid[row]
            texts = [tokenizer.decode(out.step_tokens[row, k,
                                                      :out.step_lengths[row, k]]
                                      ).strip() if valid[k] else None
                     for k in range(len(valid))]
            right = [t == gold[start + row] for t in texts]
            q = np.where(valid, out.q_value[row], -np.inf)
            rows["distinct"].append(int(valid.sum()))
            rows["covered"].append(any(right))
            rows["policy_top"].append(right[0])  # Most likely first.
            rows["qvm_top"].append(right[int(np.argmax(q))] if any(right)
                                   else None)

    def summary(mask):
        covered = [c for c, m in zip(rows["qvm_top"], mask) if m
                   and c is not None]
        pick = lambda name: float(np.mean(  # noqa: E731
            [v for v, m in zip(rows[name], mask) if m]))
        return {"states": int(sum(mask)), "distinct_steps": pick("distinct"),
                "gold_proposed": pick("covered"),
                "gold_is_policy_top": pick("policy_top"),
                "gold_is_qvm_top_where_proposed": float(np.mean(covered))
                if covered else None}

    return {"all": summary([True] * len(gold)),
            "by_depth": {int(j): summary(list(depth == j))
                         for j in np.unique(depth)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs.add_config_flags(parser, DriftProbe())
    probe = configs.config_from_args(DriftProbe(), parser.parse_args())
    if probe.round < 1:
        raise SystemExit("--round must be >= 1 (round 0 searches nothing)")
    machine = results.machine_info()
    t0 = time.perf_counter()
    run = results.read_results(probe.run_results)
    exp = configs.config_from_dict(SelfImproveExperiment, run["config"])
    if exp.searcher != "qstar":
        raise SystemExit(f"{probe.run_results}: searcher {exp.searcher!r}, "
                         "this analysis reads a Q* run")
    models, task = load_models(exp)
    exp = with_tool(exp, models.tokenizer)
    qstar = qstar_searches(exp)[probe.round - 1].config  # Its temperature.
    search_dir = os.path.join(exp.run_dir, "search")
    round_dir = os.path.join(search_dir, f"round_{probe.round}")
    answers = im.read_answers(round_dir)
    problems = [Problem(uid=p.uid, question=p.question, answer=answers[p.uid],
                        solution_steps=parse_question(p.question).steps())
                for p in im.read_prompts(round_dir)[:probe.prompts]]
    loop_right = _loop_right(round_dir, problems, task)
    policies = {"shipped": models.policy}
    if probe.round > 1:                 # Round 1 searched with the shipped.
        policies[f"round_{probe.round - 1}"] = load_policy(
            models.policy, os.path.join(search_dir, f"round_{probe.round - 1}",
                                        "policy.safetensors"))
    stop = task_stop_rule(models.tokenizer, task)
    states = gold_path_states(models.tokenizer, problems, qstar.state_width)
    methods, steps = {}, {}
    for name, policy in policies.items():
        with_policy = dataclasses.replace(models, policy=policy)
        methods[f"{name}, Q*"] = solve(
            task, problems, method="qstar", models=with_policy,
            config=qstar, key=1000 * exp.seed + probe.round,
            batch_size=exp.search_batch).summary
        for temperature in probe.temperatures:
            methods[f"{name}, Q* at temperature {temperature:g}"] = solve(
                task, problems, method="qstar", models=with_policy,
                config=at_temperature(qstar, temperature),
                key=1000 * exp.seed + probe.round,
                batch_size=exp.search_batch).summary
        methods[f"{name}, greedy"] = solve(
            task, problems, method="greedy", models=with_policy,
            config=GREEDY, key=0, batch_size=100).summary
        steps[name] = step_statistics(
            QStarModels(policy=policy, prm=models.prm, qvm=models.qvm),
            stop, qstar, models.tokenizer, states,
            batch=exp.search_batch, key=jax.random.key(probe.seed))
    results.write_results(
        probe.results, name="self_improve_drift",
        config={**configs.config_to_dict(probe),
                "run_config": run["config"]},
        methods=methods, machine=machine,
        wall_time_s=round(time.perf_counter() - t0, 1),
        extra={"gold_path_steps": steps,
               "loop_q_star_right_on_these_prompts": loop_right})
    for name, summary in methods.items():
        print(f"{name}: {summary['accuracy']:.3f}")
    for name, table in steps.items():
        print(name, table["all"])
    print(f"the loop's Q* on these prompts: {loop_right:.3f}")
    print(f"wrote {probe.results}")


def _loop_right(round_dir: str, problems: list[Problem], task) -> float:
    """The share of `problems` the loop's own search got right."""
    found = {t.uid: t for t in read_trajectories(
        os.path.join(round_dir, "trajectories.jsonl"))}
    return float(np.mean([
        found[p.uid].finished and task.reward(
            p, found[p.uid].text) == 1.0 for p in problems]))


if __name__ == "__main__":
    main()
