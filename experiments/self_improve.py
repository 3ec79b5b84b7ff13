"""Self-improvement on ArithChain from the shipped tiny policy, with its
control.

Two runs of `learning.self_improve.run_self_improvement` from the shipped
policy, on the same imagined prompts per round, with the same filter, SFT
budget and data mix:

* search: eta-MCTS (or Q*, `--searcher qstar`) on each prompt;
* control: one plain policy sample per prompt (best-of-1, no search).

Greedy accuracy on the first `eval_greedy` held-out test problems of the
default 6-step task and eta-MCTS accuracy on the first `eval_mcts` of them
after every round; results JSON (`qstar_jax.results`) and a PNG of accuracy
against round.

Usage (the README's run):
  python experiments/self_improve.py
  python experiments/self_improve.py --help     # one flag per field
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qstar_jax import configs, results  # noqa: E402
from qstar_jax.learning import imagination as im  # noqa: E402
from qstar_jax.learning import self_improve as si  # noqa: E402
from qstar_jax.learning.arithchain_text import parse_question  # noqa: E402
from qstar_jax.learning.self_improve_report import (  # noqa: E402
    plot_rounds, round_methods, round_table)
from qstar_jax.learning.trajectory_filter import FilterConfig  # noqa: E402
from qstar_jax.sampling.logits import SamplingConfig  # noqa: E402
from qstar_jax.search.alphallm import AlphaLLMConfig  # noqa: E402
from qstar_jax.search.astar import AStarConfig  # noqa: E402
from qstar_jax.search.mcts_types import MCTSConfig  # noqa: E402
from qstar_jax.search.qstar import QStarConfig  # noqa: E402
from qstar_jax.sampling.proposer import ProposerConfig  # noqa: E402
from qstar_jax.solver import (BestOfNConfig, GreedyConfig,  # noqa: E402
                              MCTSSolveConfig, SolverModels)
from qstar_jax.search.tool_check import calculator_step_check  # noqa: E402
from qstar_jax.tasks.arithchain import ArithChain, split_of  # noqa: E402
from qstar_jax.tasks.tiny_critics import (build_critic,  # noqa: E402
                                          CriticSpec, load_tiny_critics)
from qstar_jax.tasks.tiny_policy import (load_tiny_fast_policy,  # noqa
                                         load_tiny_policy)
from qstar_jax.training.trainer import TrainConfig  # noqa: E402

CRITIC_ROLES = ("prm", "value", "orm", "qvm")
PAD = 0  # The tiny tokenizer's pad id (checked in main).
# The control's best-of-N critic, the first given of these: whole-sequence
# scorers first (a critic that reads the policy's step log-probabilities,
# as the shipped qvm does, cannot score whole samples).
CONTROL_CRITICS = ("orm", "value", "prm", "qvm")

MCTS = MCTSSolveConfig(answer="best_outcome", mcts=AlphaLLMConfig(
    search=MCTSConfig(num_nodes=96, num_simulations=32, max_depth=10,
                      selection="ucb", c_min=(3, 1), c_max=(6, 2),
                      alpha=1.0),
    num_candidates=2, max_step_tokens=16, state_width=160, num_rollouts=1,
    rollout_tokens=64, pad_id=PAD))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelfImproveExperiment:
    """The experiment's settings (one flag per field).

    Attributes:
      name: results name.
      run_dir: where both runs go (search/ and control/).
      results: the results JSON; the PNG is beside it.
      rounds: R.
      prompts: imagined prompts per round.
      extra_template_share: share of prompts written with the extra
        sentence templates (the rest: the generator's).
      policy_prompts: attempts per round at policy-written prompts (0: none).
      searcher: 'mcts' or 'qstar'.
      control: also run the no-search control.
      control_samples: policy samples per prompt in the control (more
        than 1: the best by the first critic given; 1: plain samples).
      prm, value, orm, qvm: critic names ('' : none), eta-MCTS's terms.
      critic_dir: where the critics are ('': the shipped ones, the
        package assets).
      zero_critics: use untrained critics (zero heads) instead: a smoke
        run of the wiring, not an experiment.
      tool_weight: the safe calculator's penalty of a step whose written
        arithmetic it refutes, in Q* (PRM reward and Q value) and in
        eta-MCTS (b_tool), for search and evaluation alike (0: no tool).
      filter: the filter.
      mcts: eta-MCTS (search and evaluation).
      qstar: Q* (with --searcher qstar).
      sft: the SFT run of each round.
      original_share: share of gold original examples in each SFT mix.
      eval_greedy: held-out problems for greedy accuracy.
      eval_mcts: held-out problems (the first) for eta-MCTS accuracy.
      search_batch: rows per search call.
      search_temperatures: Q*'s proposal temperature in rounds 1..R, one
        per round (empty: qstar.proposer.sampling's in every round).
      seed: the loop's seed.
    """

    name: str = "self_improve"
    run_dir: str = "runs/self_improve"
    results: str = "experiments/results/self_improve.json"
    rounds: int = 2
    prompts: int = 384
    extra_template_share: float = 0.5
    policy_prompts: int = 0
    searcher: str = "mcts"
    control: bool = True
    control_samples: int = 1
    prm: str = "listwise_bce_p1ep"
    value: str = ""
    orm: str = ""
    qvm: str = ""
    critic_dir: str = "runs/siblings/critics"
    zero_critics: bool = False
    tool_weight: float = 0.0
    filter: FilterConfig = FilterConfig(critic="policy", threshold=-1e9,
                                        top_share=0.5, width=224)
    mcts: MCTSSolveConfig = MCTS
    qstar: QStarConfig = QStarConfig(
        search=AStarConfig(num_nodes=96, max_expansions=24),
        proposer=ProposerConfig(num_steps=3, num_samples=4,
                                max_step_tokens=16),
        state_width=160)
    sft: TrainConfig = TrainConfig(learning_rate=3e-4, warmup_steps=6,
                                   total_steps=60, batch_size=32,
                                   weight_decay=0.05, checkpoint_every=20,
                                   log_every=10)
    original_share: float = 0.5
    eval_greedy: int = 1000
    eval_mcts: int = 64
    search_batch: int = 16
    search_temperatures: tuple[float, ...] = ()
    seed: int = 0


def imagine_fn(exp: SelfImproveExperiment, task: ArithChain, tokenizer):
    """The prompt source: 6-step ArithChain variations (generator's and
    extra templates) and, optionally, policy-written prompts."""
    variations = (
        im.ArithChainVariation(weight=1.0 - exp.extra_template_share),
        im.ArithChainVariation(templates="extra", distractors_min=1,
                               distractors_max=3,
                               weight=exp.extra_template_share))
    variations = tuple(v for v in variations if v.weight > 0)
    examples = [p.question for p in task.problems("train")[:200]]

    def imagine(r, policy):
        parts = [im.arithchain_variations(variations, exp.prompts,
                                          seed=1000 * exp.seed + r,
                                          reference=task.config)]
        if exp.policy_prompts:
            parts.append(im.policy_written_prompts(
                policy, tokenizer, examples, im.arithchain_parser(
                    task.config, min_steps=6, max_steps=6),
                attempts=exp.policy_prompts, seed=1000 * exp.seed + r,
                shots=2, prompt_width=192))
        return im.combine(*parts)
    return imagine


def with_tool(exp: SelfImproveExperiment, tokenizer) -> SelfImproveExperiment:
    """`exp` with the calculator check in Q* and eta-MCTS where
    `tool_weight` is set (a host callable, so not a flag itself)."""
    if not exp.tool_weight:
        return exp
    check = calculator_step_check(tokenizer)
    mcts = dataclasses.replace(exp.mcts, mcts=dataclasses.replace(
        exp.mcts.mcts, tool_check=check, tool_weight=exp.tool_weight))
    qstar = dataclasses.replace(exp.qstar, tool_check=check,
                                tool_weight=exp.tool_weight)
    return dataclasses.replace(exp, mcts=mcts, qstar=qstar)


def at_temperature(qstar: QStarConfig, temperature: float) -> QStarConfig:
    """`qstar` with its proposer sampling at `temperature`."""
    proposer = qstar.proposer
    return dataclasses.replace(qstar, proposer=dataclasses.replace(
        proposer, sampling=dataclasses.replace(proposer.sampling,
                                               temperature=temperature)))


def qstar_searches(exp: SelfImproveExperiment) -> tuple[si.SearchSpec, ...]:
    """Q*'s `SearchSpec` of rounds 1..R (at `search_temperatures`, when
    given)."""
    temperatures = exp.search_temperatures or (
        exp.qstar.proposer.sampling.temperature,) * exp.rounds
    if len(temperatures) != exp.rounds:
        raise SystemExit(f"--search_temperatures: {exp.rounds} values (one "
                         f"per round), got {exp.search_temperatures}")
    return tuple(si.SearchSpec(method="qstar",
                               config=at_temperature(exp.qstar, t),
                               batch_size=exp.search_batch)
                 for t in temperatures)


def load_models(exp: SelfImproveExperiment):
    policy, tokenizer, task_config = load_tiny_policy()
    fast, _, _ = load_tiny_fast_policy()
    names = {role: getattr(exp, role) for role in CRITIC_ROLES}
    names = {role: n for role, n in names.items() if n}
    if exp.zero_critics:
        critics = {role: build_critic(CriticSpec(role=role), policy)
                   for role in names}
    else:
        kwargs = {"path": exp.critic_dir} if exp.critic_dir else {}
        loaded = load_tiny_critics(tuple(names.values()), **kwargs)
        critics = {role: loaded[n] for role, n in names.items()}
    models = SolverModels(policy=policy, tokenizer=tokenizer,
                          fast_policy=fast, add_bos=True, **critics)
    return models, ArithChain(task_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs.add_config_flags(parser, SelfImproveExperiment())
    exp = configs.config_from_args(SelfImproveExperiment(),
                                   parser.parse_args())
    machine = results.machine_info()
    t0 = time.perf_counter()
    models, task = load_models(exp)
    if models.tokenizer.pad_id != exp.mcts.mcts.pad_id:
        raise SystemExit(f"mcts.mcts.pad_id must be the tokenizer's "
                         f"{models.tokenizer.pad_id}")
    recorded = exp                  # The JSON config (tool_weight in it).
    exp = with_tool(exp, models.tokenizer)
    if exp.searcher == "mcts":
        search = si.SearchSpec(method="mcts", config=exp.mcts,
                               batch_size=exp.search_batch)
    elif exp.searcher == "qstar":
        search = qstar_searches(exp)
    else:
        raise SystemExit(f"--searcher {exp.searcher!r}: use mcts or qstar")
    control = si.SearchSpec(method="best_of_n", batch_size=64,
                            config=BestOfNConfig(
                                num_samples=exp.control_samples,
                                max_tokens=96, prompt_width=96,
                                critic=next(
                                    role for role in CONTROL_CRITICS
                                    if getattr(models, role) is not None),
                                sampling=SamplingConfig(temperature=0.8)))
    loop = si.LoopConfig(rounds=exp.rounds, filter=exp.filter, sft=exp.sft,
                         original_share=exp.original_share, max_len=192,
                         seed=exp.seed)
    evaluation = si.Evaluation(
        problems=task.problems("test")[:exp.eval_greedy],
        greedy=si.SearchSpec(method="greedy", batch_size=100,
                             config=GreedyConfig(max_tokens=96,
                                                 prompt_width=96)),
        mcts=si.SearchSpec(method="mcts", config=exp.mcts,
                           batch_size=exp.search_batch),
        mcts_problems=exp.eval_mcts, key=12345)

    def held_out(question):
        program = parse_question(question)
        return program is None or split_of(program, task.config) == "test"

    common = dict(imagine=imagine_fn(exp, task, models.tokenizer),
                  config=loop, originals=task.problems("train"),
                  evaluation=evaluation, held_out=held_out)
    runs = {"": ("search", search)}
    if exp.control:
        runs["control/"] = ("control", control)
    methods, per_run = {}, {}
    for prefix, (label, spec) in runs.items():
        run_dir = os.path.join(exp.run_dir, label)
        base = os.path.join(exp.run_dir, "search", "round_0", "eval.json")
        target = os.path.join(run_dir, "round_0", "eval.json")
        if label == "control" and os.path.exists(base) and not \
                os.path.exists(target):  # The same policy, problems, key.
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(base, target)
        method = si.round_searches(spec, exp.rounds)[0].method
        print(f"== {label}: {method}", flush=True)
        out = si.run_self_improvement(task, models, search=spec,
                                      run_dir=run_dir, **common)
        methods.update(round_methods(out.metrics, prefix))
        per_run[label] = [{k: v for k, v in m.items() if k != "eval"}
                          for m in out.metrics]
    lines = {f"{exp.searcher} data, greedy": "round{r}/greedy",
             f"{exp.searcher} data, eta-MCTS": "round{r}/mcts"}
    if exp.control:
        lines.update({"control (samples), greedy": "control/round{r}/greedy",
                      "control (samples), eta-MCTS":
                      "control/round{r}/mcts"})
    content = results.write_results(
        exp.results, name=exp.name, config=configs.config_to_dict(recorded),
        methods=methods, machine=machine,
        wall_time_s=round(time.perf_counter() - t0, 1),
        extra={"rounds": per_run,
               "note": f"greedy on test[:{exp.eval_greedy}], eta-MCTS on "
                       f"test[:{exp.eval_mcts}] of the default 6-step task"
                       + (" (zero critics: a wiring run)"
                          if exp.zero_critics else "")})
    png = os.path.splitext(exp.results)[0] + ".png"
    plot_rounds(content["methods"], png, lines,
                title="Self-improvement on ArithChain (tiny policy)")
    print(round_table(content["methods"], lines))
    print(f"wrote {exp.results} and {png}")


if __name__ == "__main__":
    main()
