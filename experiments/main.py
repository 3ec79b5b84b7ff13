"""The main job: every method of the library side by side on held-out problems.

On held-out ArithChain test problems, the shipped tiny policy answers by
greedy decoding, best-of-N reranked by the PRM, the QVM and the ORM,
majority vote, step-level beam search, Q* and eta-MCTS (rollouts by the
shipped fast policy), each through `qstar_jax.solve`. A method whose critics
are not shipped is absent from the table (named as such), never faked. The
job prints the config and one markdown table (accuracy with a 95%
interval, generated tokens and model calls per problem, seconds) and writes
under --run_dir:

  results.json   the results schema (`qstar_jax.results`), config included;
  accuracy.png   accuracy against generated tokens per problem;
  store/         every method's records in chunks (`qstar_jax.solve_store`):
                 a second run with the same config rereads them, and a killed
                 run resumes at its first missing chunk.

`--task gsm8k` runs the same comparison with SmolLM2-135M-Instruct (real
weights, chat prompts) on a slice of the GSM8K test set; `--model DIR` takes
any Hugging Face checkpoint directory instead (a bigger model on an
accelerator, by config alone).

Usage:
  python experiments/main.py [--problems 128] [--methods greedy,qstar]
      [--budget 1.0] [--task arithchain|gsm8k] [--run_dir runs/main] ...
  (every field of `configs.main.MainConfig` is a flag; --help lists them)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Callable, NamedTuple

from configs.main import TASKS, MainConfig, default_config, scaled
from qstar_jax.configs import (add_config_flags, config_from_args,
                               config_to_dict)
from qstar_jax.results import (machine_info, markdown_table, plot_accuracy,
                               write_results)
from qstar_jax.solve_store import ChunkCallback, solve_stored
from qstar_jax.solver import SolverModels


class Setup(NamedTuple):
    """What the job runs on: the task, its problems, the models, and the
    names of the assets that fill each model role."""

    task: object
    problems: list
    models: SolverModels
    assets: dict


class Row(NamedTuple):
    """One table row: its id, label, `solve` method and config."""

    row: str
    label: str
    method: str
    config: object


def parse_config(argv: list[str] | None = None) -> MainConfig:
    """The config from the command line (`--task` chooses the defaults)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task", default="arithchain", choices=TASKS)
    task = first.parse_known_args(argv)[0].task
    defaults = default_config(task)
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Defaults shown are those of --task " + task)
    add_config_flags(parser, defaults)
    return config_from_args(defaults, parser.parse_args(argv))


def _shipped_critics() -> tuple[dict, dict]:
    """(role -> critic, role -> asset name) of the shipped tiny critics: a
    critic named as its role, else the first of that role by name."""
    from qstar_jax.tasks import tiny_critics
    by_role = {}
    for name in tiny_critics.shipped_critic_names():
        spec, _, _ = tiny_critics.read_spec(
            os.path.join(tiny_critics.ASSET_DIR, name))
        if name == spec.role or spec.role not in by_role:
            by_role[spec.role] = name
    critics = tiny_critics.load_tiny_critics(tuple(by_role.values())) \
        if by_role else {}
    if "qvm" in by_role and "prm" not in by_role:
        # The shipped step critic scores Q*'s g as well as its h.
        by_role["prm"] = by_role["qvm"]
    return ({role: critics[name] for role, name in by_role.items()},
            by_role)


def load_arithchain(config: MainConfig) -> Setup:
    """The shipped tiny policy, fast policy and critics on ArithChain test
    problems [offset, offset + problems)."""
    from qstar_jax.tasks.arithchain import ArithChain
    from qstar_jax.tasks.tiny_policy import (load_tiny_fast_policy,
                                             load_tiny_policy)
    if config.model != "tiny":
        raise ValueError(f"main: --task arithchain runs the shipped tiny "
                         f"policy (--model tiny), got {config.model!r}")
    policy, tokenizer, task_config = load_tiny_policy()
    fast_policy, _, _ = load_tiny_fast_policy()
    critics, names = (_shipped_critics() if config.critics == "shipped"
                      else ({}, {}))
    task = ArithChain(task_config)
    problems = list(task.problems("test"))[
        config.offset:config.offset + config.problems]
    models = SolverModels(policy=policy, tokenizer=tokenizer,
                          fast_policy=fast_policy, add_bos=True, **critics)
    return Setup(task, problems, models,
                 {"policy": "tiny_policy", "fast_policy": "tiny_fast_policy",
                  **{role: f"tiny_critics/{n}" for role, n in names.items()}})


def load_gsm8k(config: MainConfig) -> Setup:
    """SmolLM2-135M-Instruct (or the Hugging Face checkpoint in
    config.model) on GSM8K test problems with chat prompts; no critics."""
    from qstar_jax.models.tokenizer import Tokenizer
    from qstar_jax.tasks.gsm8k_task import Gsm8kTask
    if config.model == "smollm2":
        from qstar_jax.models.checkpoint import smollm2_gguf_path
        from qstar_jax.models.gguf_loader import load_gguf
        path = smollm2_gguf_path()
        policy, _ = load_gguf(path)
        tokenizer = Tokenizer.from_gguf(path)
    elif os.path.isdir(config.model):
        from qstar_jax.models.safetensors_loader import load_safetensors
        path = config.model
        policy, _ = load_safetensors(path)
        tokenizer = Tokenizer.from_tokenizer_json(path)
    else:
        raise ValueError(f"main: --model for gsm8k is 'smollm2' or a Hugging"
                         f" Face checkpoint directory, got {config.model!r}")
    if config.critics != "none":
        raise ValueError("main: no critics are shipped for GSM8K; use "
                         "--critics none")
    task = Gsm8kTask(chat=tokenizer.apply_chat_template)
    problems = list(task.problems("test"))[
        config.offset:config.offset + config.problems]
    return Setup(task, problems,
                 SolverModels(policy=policy, tokenizer=tokenizer),
                 {"policy": path})


def load_setup(config: MainConfig) -> Setup:
    """The task's setup (`load_arithchain` or `load_gsm8k`)."""
    setup = (load_arithchain if config.task == "arithchain"
             else load_gsm8k)(config)
    if len(setup.problems) < config.problems:
        raise ValueError(f"main: {config.problems} problems from "
                         f"{config.offset} asked, the test split has "
                         f"{len(setup.problems)} there")
    return setup


def _absent_critic(critic: str, evidence: bool) -> str:
    if evidence:
        return (f"its critic, the {critic.upper()}, reads the policy's step "
                f"log-probabilities, which whole-sequence scoring does not "
                f"give")
    return f"needs its critic, {critic.upper()} (none shipped)"


def plan_rows(config: MainConfig, models: SolverModels
              ) -> tuple[list[Row], dict[str, str]]:
    """(rows to run, row id -> why it is absent) for config.methods."""
    s = scaled(config.settings, config.budget)
    has = {name: getattr(models, name) is not None
           for name in ("prm", "qvm", "value", "orm")}
    # Best-of-N and beam read critics on whole token sequences; a critic
    # that also reads the policy's step log-probabilities (evidence) scores
    # only proposed branches (Q*'s children).
    evidence = {name: has[name] and getattr(models, name).evidence
                is not None for name in has}
    rows, absent = [], {}
    n = s.best_of_n.num_samples
    for row in config.methods:
        if row == "greedy":
            rows.append(Row(row, "greedy", "greedy", s.greedy))
        elif row.startswith("best_of_n_"):
            critic = row[len("best_of_n_"):]
            if not has[critic] or evidence[critic]:
                absent[row] = _absent_critic(critic, evidence[critic])
                continue
            rows.append(Row(row, f"best-of-{n} ({critic.upper()})",
                            "best_of_n", dataclasses.replace(
                                s.best_of_n, critic=critic)))
        elif row == "majority_vote":
            votes = s.majority_vote.num_samples
            rows.append(Row(row, f"majority vote ({votes})",
                            "majority_vote", s.majority_vote))
        elif row == "beam":
            if not has[s.beam.score] or evidence[s.beam.score]:
                absent[row] = _absent_critic(s.beam.score,
                                             evidence[s.beam.score])
                continue
            rows.append(Row(row, f"beam (width {s.beam.width}, "
                            f"{s.beam.score.upper()})", "beam", s.beam))
        elif row == "qstar":
            if not (has["prm"] and has["qvm"]):
                absent[row] = "needs a PRM and a QVM"
                continue
            budget = s.qstar.search.max_expansions
            critics = ("QVM for g and h" if models.prm is models.qvm
                       else "PRM + QVM")
            rows.append(Row(row, f"Q* ({critics}, {budget} expansions)",
                            "qstar", s.qstar))
        elif row == "mcts":
            if not (has["value"] or has["prm"] or has["orm"]):
                absent[row] = ("needs a value, PRM or ORM critic (its node "
                               "score)")
                continue
            sims = s.mcts.mcts.search.num_simulations
            mcts = s.mcts
            if evidence["prm"]:
                # eta-MCTS reads its PRM at a state's last token, which an
                # evidence critic cannot score: no PRM term.
                mcts = dataclasses.replace(mcts, mcts=dataclasses.replace(
                    mcts.mcts, prm_weight=0.0))
            rows.append(Row(row, f"eta-MCTS ({sims} simulations)", "mcts",
                            mcts))
    return rows, absent


def run(config: MainConfig, setup: Setup | None = None, *,
        on_chunk: Callable[[str], ChunkCallback] | None = None,
        progress: bool = True) -> tuple[dict, dict]:
    """Runs the job and writes its files (module docstring).

    Args:
      config: the job's config.
      setup: the task, problems and models (None: `load_setup(config)`).
      on_chunk: row id -> the `ChunkCallback` of its `solve_stored` call.
      progress: progress bars.

    Returns:
      (the results file's content, row label -> `SolveReport`).
    """
    start = time.perf_counter()
    machine = machine_info()
    setup = setup or load_setup(config)
    rows, absent = plan_rows(config, setup.models)
    store = os.path.join(config.run_dir, "store")
    methods, reports = {}, {}
    for row in rows:
        report = solve_stored(
            setup.task, setup.problems, store, method=row.method,
            models=setup.models, config=row.config, seed=config.seed,
            batch_size=config.batch_size, chunk_size=config.chunk_size,
            label=row.row, reuse=config.cache, progress=progress,
            on_chunk=on_chunk(row.row) if on_chunk else None)
        reports[row.label] = report
        methods[row.label] = {**report.summary, "row": row.row,
                              "method": row.method}
        s = report.summary
        print(f"{row.label}: accuracy {s['accuracy']:.3f}, "
              f"{s['seconds']:.0f} s"
              f"{' (stored)' if s['stored_chunks'] == s['chunks'] else ''}",
              flush=True)
    for row, why in absent.items():
        print(f"absent: {row} ({why})")
    path = os.path.join(config.run_dir, "results.json")
    content = write_results(
        path, name=f"main_{config.task}", config=config_to_dict(config),
        methods=methods, machine=machine,
        wall_time_s=round(time.perf_counter() - start, 2),
        extra={"absent": absent, "assets": setup.assets,
               "problems": [p.uid for p in setup.problems],
               "seconds_note": "seconds: each method's computing time when "
                               "its records were computed (compilation "
                               "included), also for stored rows"})
    if methods:
        plot_accuracy(content, os.path.join(config.run_dir, "accuracy.png"),
                      title=f"main job, {config.task}, "
                            f"{len(setup.problems)} problems")
    return content, reports


def summary_text(content: dict) -> str:
    """The table and a closing line of a main-job results file."""
    c = content["config"]
    lines = [markdown_table(content)] if content["methods"] else []
    lines.append(f"\n{len(c['methods'])} rows asked, "
                 f"{len(content['methods'])} run; whole run "
                 f"{content['wall_time_s']:.0f} s; wrote "
                 f"{os.path.join(c['run_dir'], 'results.json')} and "
                 f"{os.path.join(c['run_dir'], 'accuracy.png')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    print(json.dumps(config_to_dict(config), indent=1), flush=True)
    content, _ = run(config)
    print("\n" + summary_text(content))


if __name__ == "__main__":
    main(sys.argv[1:])
