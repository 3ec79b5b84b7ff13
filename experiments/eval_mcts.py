"""eta-MCTS on held-out ArithChain against the policy's own baselines.

AlphaLLM's Table 7 analogue (eta-MCTS against greedy, majority vote and
ORM reranking of N samples, at two search budgets, with generated tokens
counted) and its Table 3(a) ablation (the full search, then without
adaptive branching, the PRM term, the fast-rollout ORM term or state
merge), all through `qstar_jax.solve` on the shipped tiny policy, its fast
rollout policy and the shipped critics (value, ORM; the PRM is optional:
--prm DIR). Every method reads only the model-written text at search time;
the task grades the chosen answers afterwards.

Usage (the README's table):
  python experiments/eval_mcts.py --problems 128 \
      --out experiments/results/eval_mcts.json \
      --plot experiments/results/eval_mcts.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from qstar_jax import SolverModels, solve
from qstar_jax.configs import add_config_flags, config_from_args, \
    config_to_dict
from qstar_jax.results import (machine_info, markdown_table, plot_accuracy,
                               write_results)
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.search.alphallm import AlphaLLMConfig
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.tool_check import calculator_step_check
from qstar_jax.solver import BestOfNConfig, MajorityVoteConfig, \
    MCTSSolveConfig
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_critics import load_critic, load_tiny_critics
from qstar_jax.tasks.tiny_policy import (load_tiny_fast_policy,
                                         load_tiny_policy)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalMCTSConfig:
    """What eval_mcts runs.

    Attributes:
      problems: the first held-out test problems searched.
      offset: first problem of the split; split: 'test', or 'train' with an
        offset past the critics' training problems (a validation set).
      samples: N of majority vote and ORM reranking (one row each).
      simulations: eta-MCTS budgets (one row each).
      ablation_simulations: the budget of the Table 3(a) ablation rows
        (0: no ablation).
      num_rollouts, rollout_tokens: fast rollouts per evaluated node.
      c_min, c_max: adaptive branching bounds by depth (root, deeper).
      merge_threshold: state merge's edit distance in tokens.
      tool_weight: b_tool of a calculator-refuted step (0: no tool).
      temperature: the options' sampling temperature.
      batch_size: problems per jitted call.
      seed: the key of every method.
    """

    problems: int = 128
    offset: int = 0
    split: str = "test"
    samples: tuple[int, ...] = (4, 16, 64)
    simulations: tuple[int, ...] = (16, 32)
    ablation_simulations: int = 16
    num_rollouts: int = 1
    rollout_tokens: int = 72
    c_min: tuple[int, ...] = (2, 1)
    c_max: tuple[int, ...] = (4, 2)
    merge_threshold: int = 2
    tool_weight: float = 1.0
    temperature: float = 0.8
    batch_size: int = 16
    seed: int = 0


def mcts_config(cfg: EvalMCTSConfig, simulations: int, tokenizer, *,
                branching: bool = True, prm: bool = True, orm: bool = True,
                merge: bool = True) -> MCTSSolveConfig:
    """The eta-MCTS of a row; the flags remove one component each."""
    c_min = cfg.c_min if branching else cfg.c_max
    search = MCTSConfig(num_nodes=4 * simulations + 8,
                        num_simulations=simulations, max_depth=10,
                        c_min=c_min, c_max=cfg.c_max,
                        merge_threshold=cfg.merge_threshold if merge else 0)
    mcts = AlphaLLMConfig(
        search=search, num_candidates=4, max_step_tokens=12,
        sampling=SamplingConfig(temperature=cfg.temperature),
        state_width=176, prm_weight=1.0 if prm else 0.0,
        orm_weight=1.0 if orm else 0.0, num_rollouts=cfg.num_rollouts,
        rollout_tokens=cfg.rollout_tokens,
        tool_weight=cfg.tool_weight,
        tool_check=(calculator_step_check(tokenizer) if cfg.tool_weight
                    else None))
    return MCTSSolveConfig(mcts=mcts, answer="best_outcome")


def rows(cfg: EvalMCTSConfig, tokenizer, has_prm: bool) -> dict:
    """Row name -> (method, config)."""
    out = {"greedy": ("greedy", None)}
    for n in cfg.samples:
        out[f"majority vote of {n}"] = (
            "majority_vote", MajorityVoteConfig(num_samples=n, max_tokens=96))
        out[f"ORM reranking of {n}"] = (
            "best_of_n", BestOfNConfig(num_samples=n, max_tokens=96,
                                       critic="orm"))
    for s in cfg.simulations:
        out[f"eta-MCTS, {s} simulations"] = (
            "mcts", mcts_config(cfg, s, tokenizer, prm=has_prm))
    s = cfg.ablation_simulations
    if s:
        for name, change in (("adaptive branching", "branching"),
                             ("PRM", "prm"), ("fast-rollout ORM", "orm"),
                             ("state merge", "merge")):
            if change == "prm" and not has_prm:
                continue
            out[f"eta-MCTS, {s} simulations, without {name}"] = (
                "mcts", mcts_config(cfg, s, tokenizer, prm=has_prm,
                                    **{change: False}))
    return out


ROW_LISTS = ("samples", "simulations", "ablation_simulations")
"""Config fields that only say which rows run (their names hold them)."""


def _row_settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ROW_LISTS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_flags(parser, EvalMCTSConfig())
    parser.add_argument("--prm", default=None,
                        help="a saved non-evidence PRM for the PRM term")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    cfg = config_from_args(EvalMCTSConfig(), args)
    print(json.dumps(config_to_dict(cfg)), flush=True)
    machine, t0 = machine_info(), time.time()
    policy, tokenizer, task_config = load_tiny_policy()
    fast, _, _ = load_tiny_fast_policy()
    critics = load_tiny_critics(("value", "orm"))
    prm = load_critic(args.prm) if args.prm else None
    models = SolverModels(policy=policy, tokenizer=tokenizer,
                          fast_policy=fast, value=critics["value"],
                          orm=critics["orm"], prm=prm, add_bos=True)
    task = ArithChain(task_config)
    problems = task.problems(cfg.split)[cfg.offset:cfg.offset + cfg.problems]
    saved_config = {**config_to_dict(cfg), "prm": args.prm}

    def save(methods):
        return write_results(args.out, name="eval_mcts", config=saved_config,
                             methods=methods, machine=machine,
                             wall_time_s=round(time.time() - t0, 1))

    methods = {}
    if os.path.exists(args.out):
        # Rows of an earlier run whose settings match are kept: the row
        # lists (samples, simulations, ablation) may differ, the rest not.
        with open(args.out) as f:
            earlier = json.load(f)
        if _row_settings(earlier["config"]) == _row_settings(saved_config):
            methods = earlier["methods"]
    for name, (method, config) in rows(cfg, tokenizer,
                                       prm is not None).items():
        if name in methods:
            continue
        report = solve(task, problems, method=method, models=models,
                       config=config, key=cfg.seed,
                       batch_size=cfg.batch_size)
        methods[name] = report.summary
        print(name, json.dumps({k: report.summary[k] for k in (
            "accuracy", "accuracy_ci95", "tokens_per_problem",
            "model_calls_per_problem", "seconds")}), flush=True)
        save(methods)                 # A killed run keeps its rows.
    content = save(methods)
    print(markdown_table(content))
    if args.plot:
        plot_accuracy(content, args.plot)


if __name__ == "__main__":
    main()
