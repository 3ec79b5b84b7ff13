"""Which searched data moves the greedy policy: an analysis of one round.

Fine-tunes the shipped tiny policy, with one round's SFT settings, on
selections of that round's data and measures greedy accuracy on the first
`eval_greedy` held-out test problems after each. The selections read the
round's answer key, so none is a filter the loop could use; they say what
the loop's data would give if a filter were perfect, and what gold
solutions of the same prompts give:

* kept_correct: the kept trajectories whose answer is right;
* corrective: searched trajectories that are right where the starting
  policy's greedy answer (computed here) is wrong;
* gold_kept_prompts: the gold solutions of the kept prompts (same prompts
  and count as the kept data; the texts from the questions' programs);
* gold_fresh: the gold solutions of `fresh` training problems of the
  default task drawn at random (not among the defaults of `selections`).

With `--filters true` it also reports each filter's precision on the
round's finished trajectories (the share right among the best scored
quarter, half, three quarters and all) for the policy's mean
log-probability, the shipped critics (value, ORM, and the story-probed
QVM read as a PRM: its min, sum or last step score) and self-consistency
(the share of 8 fresh policy samples of the prompt that reach the
trajectory's answer).

Usage (the README's run, on round 1 of the Q* run with the story QVM):
  python experiments/self_improve_data.py \
      --round_dir runs/self_improve_qstar_story/search/round_1 --filters true
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax import nnx  # noqa: E402

from qstar_jax import configs, results  # noqa: E402
from qstar_jax.learning import imagination as im  # noqa: E402
from qstar_jax.learning.arithchain_text import parse_question  # noqa: E402
from qstar_jax.learning.self_improve import (read_trajectories,  # noqa
                                             sft_examples)
from qstar_jax.learning.trajectory_filter import (  # noqa: E402
    FilterConfig, Trajectory, UngradedTask, filter_precision, is_right,
    score_trajectories, search_prompts)
from qstar_jax.sampling.logits import SamplingConfig  # noqa: E402
from qstar_jax.solver import (GreedyConfig, MajorityVoteConfig,  # noqa
                              SolverModels, solve)
from qstar_jax.tasks.arithchain import ArithChain  # noqa: E402
from qstar_jax.tasks.tiny_critics import load_tiny_critics  # noqa: E402
from qstar_jax.tasks.tiny_policy import load_tiny_policy  # noqa: E402
from qstar_jax.training.losses import sft_loss  # noqa: E402
from qstar_jax.training.trainer import TrainConfig, train  # noqa: E402

SELECTIONS = ("kept_correct", "corrective", "gold_kept_prompts")
OPTIONAL = ("gold_fresh",)
GREEDY = GreedyConfig(max_tokens=96, prompt_width=96)
# (critic field, aggregation) of each filter compared; 'prm' is the shipped
# story-probed QVM.
FILTERS = (("policy", "min"), ("value", "min"), ("orm", "min"),
           ("prm", "min"), ("prm", "sum"), ("prm", "last"))
SHARES = (1.0, 0.75, 0.5, 0.25)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataProbe:
    """Settings (one flag per field).

    Attributes:
      round_dir: a loop round's directory (prompts, answer key,
        trajectories, kept data).
      selections: which selections to train on (of SELECTIONS and
        OPTIONAL).
      filters: also compare the filters' precision on the round (without
        it, an earlier run's table of the same round is kept).
      agreement_samples: with filters, also rank by self-consistency:
        the share of this many policy samples of each prompt whose answer
        is the trajectory's (0: not compared).
      agreement_temperature: those samples' temperature.
      fresh: training problems for gold_fresh.
      seed: the draw of gold_fresh's problems.
      sft: the SFT run (the loop's round settings).
      eval_greedy: held-out test problems for greedy accuracy.
      results: the results JSON (the rows of an earlier run with the same
        round_dir, sft and eval_greedy, and for gold_fresh the same fresh
        and seed, are kept, so selections can be run one at a time).
    """

    round_dir: str = "runs/self_improve_qstar_story/search/round_1"
    selections: tuple[str, ...] = SELECTIONS
    sft: TrainConfig = TrainConfig(learning_rate=1e-3, warmup_steps=10,
                                   total_steps=250, batch_size=32,
                                   weight_decay=0.05, log_every=50)
    filters: bool = False
    agreement_samples: int = 8
    agreement_temperature: float = 0.8
    fresh: int = 1536
    seed: int = 0
    eval_greedy: int = 1000
    results: str = "experiments/results/self_improve_data.json"


def agreement_scores(task, models: SolverModels, trajectories,
                     samples: int, temperature: float) -> list[Trajectory]:
    """The trajectories scored by self-consistency: the share of `samples`
    fresh policy solutions of the same prompt (at `temperature`, key 0)
    whose answer equals the trajectory's. Reads no answer key."""
    prompts = [im.Prompt(uid=t.uid, question=t.question, source="")
               for t in trajectories]
    votes = solve(
        UngradedTask(task), [im.as_problem(p) for p in prompts],
        method="majority_vote", models=models, config=MajorityVoteConfig(
            num_samples=samples, max_tokens=GREEDY.max_tokens,
            prompt_width=GREEDY.prompt_width,
            sampling=SamplingConfig(temperature=temperature)),
        key=0, batch_size=64, progress=True).records
    return [dataclasses.replace(t, score=r.details["answer_votes"].get(
        t.answer, 0) / samples) for t, r in zip(trajectories, votes)]


def filter_table(task, models: SolverModels, trajectories, answers,
                 agreement_samples: int = 0,
                 agreement_temperature: float = 0.8
                 ) -> dict[str, dict[str, float]]:
    """'critic/aggregation' (and 'agreement/<N>' when `agreement_samples`)
    -> {share: precision of the best scored share} over the finished
    trajectories (reads the answer key: analysis)."""
    finished = [t for t in trajectories if t.finished]
    table = {}
    rankings = {}
    for critic, aggregation in FILTERS:
        rankings[f"{critic}/{aggregation}"] = score_trajectories(
            task, finished, models=models, config=FilterConfig(
                critic=critic, aggregation=aggregation, threshold=-1e9))
    if agreement_samples:
        rankings[f"agreement/{agreement_samples}"] = agreement_scores(
            task, models, finished, agreement_samples, agreement_temperature)
    for name, scored in rankings.items():
        scored = sorted((t for t in scored if t.score is not None),
                        key=lambda t: -t.score)
        table[name] = {
            str(share): filter_precision(
                scored[:int(round(share * len(scored)))], answers,
                task)["precision"] for share in SHARES}
    return table


def _same_row_settings(selection: str, earlier: dict, now: dict) -> bool:
    """Whether an earlier run's row of `selection` was made with the
    settings of this run (configs as `configs.config_to_dict` gives them)."""
    keys = ("round_dir", "sft", "eval_greedy")
    if selection in OPTIONAL:
        keys += ("fresh", "seed")
    return all(earlier.get(k) == now[k] for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs.add_config_flags(parser, DataProbe())
    probe = configs.config_from_args(DataProbe(), parser.parse_args())
    unknown = set(probe.selections) - set(SELECTIONS + OPTIONAL)
    if unknown:
        raise SystemExit(f"unknown selections {sorted(unknown)}; use "
                         f"{SELECTIONS + OPTIONAL}")
    machine = results.machine_info()
    t0 = time.perf_counter()
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    models = SolverModels(policy=policy, tokenizer=tokenizer, add_bos=True)
    if probe.filters:
        critics = load_tiny_critics(("qvm", "value", "orm"))
        models = dataclasses.replace(models, prm=critics["qvm"],
                                     value=critics["value"],
                                     orm=critics["orm"])
    test = task.problems("test")[:probe.eval_greedy]
    answers = im.read_answers(probe.round_dir)
    prompts = im.read_prompts(probe.round_dir)
    searched = read_trajectories(os.path.join(probe.round_dir,
                                              "trajectories.jsonl"))
    kept = read_trajectories(os.path.join(probe.round_dir, "kept.jsonl"))

    def right(t):
        return (t.finished and answers.get(t.uid) is not None
                and is_right(t, answers[t.uid], task))

    greedy_right = {t.uid: right(t) for t in search_prompts(
        task, prompts, method="greedy", models=models, config=GREEDY,
        key=0, batch_size=100, progress=False)}
    data = {
        "kept_correct": [t for t in kept if right(t)],
        "corrective": [t for t in searched
                       if right(t) and not greedy_right[t.uid]],
        "gold_kept_prompts": [dataclasses.replace(
            t, text="\n".join(parse_question(t.question).steps()))
            for t in kept]}
    if "gold_fresh" in probe.selections:
        pool = task.problems("train")
        picks = random.Random(f"fresh:{probe.seed}").sample(
            range(len(pool)), probe.fresh)
        data["gold_fresh"] = [Trajectory(
            uid=f"fresh-{i}", question=pool[i].question,
            text=task.format_solution(pool[i]), finished=True,
            answer=pool[i].answer)
            for i in picks]

    def greedy_summary(model):
        report = solve(task, test, method="greedy", models=dataclasses.replace(
            models, policy=model), config=GREEDY, key=0, batch_size=100,
            progress=False)
        return report.summary

    methods = {"shipped policy": greedy_summary(policy)}
    config = configs.config_to_dict(probe)
    filters = None
    if os.path.exists(probe.results):
        earlier = results.read_results(probe.results)
        if earlier["config"].get("round_dir") == probe.round_dir:
            filters = earlier["extra"].get("filters")
        methods.update({k: v for k, v in earlier["methods"].items()
                        if k in SELECTIONS + OPTIONAL
                        and _same_row_settings(k, earlier["config"], config)})
    counts = {"prompts": len(prompts), "searched_right": sum(
        map(right, searched)), "kept": len(kept),
        "greedy_right_on_prompts": sum(greedy_right.values()),
        "greedy_right_on_kept_prompts": sum(greedy_right[t.uid]
                                            for t in kept)}
    for name in probe.selections:
        if not data[name]:
            print(f"{name}: no examples, not trained", flush=True)
            continue
        arrays, _ = sft_examples(task, tokenizer, data[name], [], share=0.0,
                                 seed=0, max_len=192)
        trained = train(nnx.clone(policy), arrays, sft_loss, probe.sft,
                        progress=True).model
        methods[name] = dict(greedy_summary(trained),
                             examples=len(data[name]))
        print(name, len(data[name]), f"{methods[name]['accuracy']:.3f}",
              flush=True)
    content = results.write_results(
        probe.results, name="self_improve_data",
        config=config, methods=methods,
        machine=machine, wall_time_s=round(time.perf_counter() - t0, 1),
        extra={"counts": counts,
               "filters": (filter_table(
                   task, models, searched, answers,
                   probe.agreement_samples, probe.agreement_temperature)
                           if probe.filters else filters),
               "note": f"greedy on test[:{probe.eval_greedy}] after SFT of "
                       "the shipped policy on each selection"})
    print(results.markdown_table(content))
    for name, row in (content["extra"]["filters"] or {}).items():
        print(name, {k: None if v is None else round(v, 3)
                     for k, v in row.items()})


if __name__ == "__main__":
    main()
