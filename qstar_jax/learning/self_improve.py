"""AlphaLLM's self-improvement loop: imagine, search, filter, fine-tune.

`run_self_improvement` runs R rounds from a policy; round r (1..R) under
`run_dir/round_<r>/`:

1. imagine: `imagine(r, policy) -> Imagined` (any prompt source of
   `imagination`); prompts.jsonl and the answer key answers.json, apart;
2. search: one trajectory per prompt with the round's searcher
   (`SearchSpec`: a `solve` method and its config: eta-MCTS, Q*, or plain
   samples for the control), scored by the filter critic
   (`trajectory_filter`): trajectories.jsonl;
3. filter: kept.jsonl, the finished trajectories scored at or above the
   threshold; the search and filter stages receive `Prompt`s (no answer)
   and never open answers.json;
4. analysis (after the filter has decided): the filter's precision from
   the answer key and the number of kept prompts that the task's held-out
   check flags (zero by construction): analysis.json;
5. fine-tune: SFT (`training.losses.sft_loss`, `training.trainer.train`)
   of the previous round's policy on the kept trajectories mixed with gold
   solutions of original training problems (`original_share` of the
   examples), Orbax checkpoints under sft/, resumed when present; the
   critics stay fixed; policy.safetensors (float32);
6. evaluation: greedy and eta-MCTS accuracy of the new policy on the same
   held-out problems (`solve`, with Wilson 95% intervals and tokens per
   problem): eval.json. Round 0 is the starting policy's evaluation.

Every stage writes its file atomically and is skipped when the file exists,
and the SFT resumes from its latest checkpoint, so a killed run started
again continues where it stopped and ends with the same parameters as an
uninterrupted one. metrics.json of each round gathers its numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from qstar_jax.learning import imagination as im
from qstar_jax.learning.trajectory_filter import (FilterConfig, Trajectory,
                                                  filter_precision,
                                                  filter_trajectories,
                                                  score_trajectories,
                                                  search_prompts)
from qstar_jax.models.decoder import Decoder
from qstar_jax.solver import SolverModels, solve
from qstar_jax.tasks.base import Problem
from qstar_jax.tasks.tiny_policy import load_params_into, save_params
from qstar_jax.training.losses import sft_arrays, sft_loss
from qstar_jax.training.trainer import TrainConfig, train

POLICY_FILE = "policy.safetensors"
Imagine = Callable[[int, Decoder], im.Imagined]
"""imagine(round, policy) -> the round's prompts and answer key."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """A `solve` method and its config.

    Attributes:
      method: a `solver.METHODS` name ('mcts', 'qstar', 'best_of_n', ...).
      config: its config.
      batch_size: rows per jitted call.
    """

    method: str
    config: Any
    batch_size: int = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """The loop's settings (the searchers are `SearchSpec`s apart).

    Attributes:
      rounds: R.
      filter: which trajectories are kept.
      sft: the fine-tuning run of each round (total_steps per round).
      original_share: share of each round's SFT examples that are gold
        solutions of original training problems (0: kept data only; the
        original count is round(share / (1 - share) * kept), at least 1
        when there is no kept data).
      max_len: tokens per SFT example (longer ones are skipped).
      seed: the loop's seed (search keys, original-data draws, SFT order).
    """

    rounds: int = 2
    filter: FilterConfig = FilterConfig()
    sft: TrainConfig = TrainConfig()
    original_share: float = 0.5
    max_len: int = 192
    seed: int = 0

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"LoopConfig.rounds must be >= 1, got "
                             f"{self.rounds}")
        if not 0.0 <= self.original_share < 1.0:
            raise ValueError("LoopConfig.original_share must be in [0, 1), "
                             f"got {self.original_share}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The held-out evaluation of every round.

    Attributes:
      problems: the held-out problems (greedy on all of them).
      greedy: the greedy `SearchSpec`.
      mcts: the search `SearchSpec` (None: greedy only).
      mcts_problems: how many of `problems` (the first) the search gets.
      key: the evaluation's key (the same every round).
    """

    problems: Sequence[Problem]
    greedy: SearchSpec
    mcts: SearchSpec | None = None
    mcts_problems: int = 256
    key: int = 0


def _write_json(path: str, content) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1, default=float)
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_trajectories(path: str, trajectories: Sequence[Trajectory]
                       ) -> None:
    """One JSON line per trajectory (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        for t in trajectories:
            f.write(json.dumps(dataclasses.asdict(t)) + "\n")
    os.replace(tmp, path)


def read_trajectories(path: str) -> list[Trajectory]:
    """The trajectories of `write_trajectories`."""
    with open(path) as f:
        return [Trajectory(**json.loads(line)) for line in f if line.strip()]


def sft_examples(task, tokenizer, kept: Sequence[Trajectory],
                 originals: Sequence[Problem], *, share: float, seed: int,
                 max_len: int) -> tuple[dict[str, np.ndarray], dict]:
    """SFT arrays of kept trajectories mixed with original gold solutions.

    Originals are drawn without replacement from `originals` with
    `random.Random(f'originals:{seed}')`. Prompt: BOS + task prompt;
    target: the solution text (kept) or `task.format_solution` (gold),
    then EOS.

    Returns:
      (`sft_arrays` output, {'kept', 'original', 'skipped_long'}).
    """
    count = int(round(share / (1.0 - share) * len(kept))) if kept else 1
    count = min(count, len(originals))
    picks = random.Random(f"originals:{seed}").sample(range(len(originals)),
                                                      count)
    pairs = [(task.format_prompt(im.as_problem(im.Prompt(
        uid=t.uid, question=t.question, source=""))), t.text) for t in kept]
    pairs += [(task.format_prompt(originals[i]),
               task.format_solution(originals[i])) for i in picks]
    prompts, targets, skipped = [], [], 0
    for prompt, target in pairs:
        p = tokenizer.encode(prompt, add_bos=True)
        t = tokenizer.encode(target, add_eos=True)
        if len(p) + len(t) > max_len:
            skipped += 1
            continue
        prompts.append(p)
        targets.append(t)
    if not prompts:
        raise ValueError("sft_examples: no example fits max_len "
                         f"{max_len}")
    data = sft_arrays(prompts, targets, max_len=max_len,
                      pad_id=tokenizer.pad_id)
    return data, {"kept": len(kept), "original": count,
                  "skipped_long": skipped}


def evaluate_round(task, models: SolverModels, evaluation: Evaluation,
                   progress: bool = True) -> dict:
    """{'greedy': summary, 'mcts': summary or absent} of `solve` on the
    held-out problems (`results.method_summary` entries)."""
    out = {}
    specs = [("greedy", evaluation.greedy, evaluation.problems)]
    if evaluation.mcts is not None:
        specs.append(("mcts", evaluation.mcts,
                      evaluation.problems[:evaluation.mcts_problems]))
    for name, spec, problems in specs:
        report = solve(task, problems, method=spec.method, models=models,
                       config=spec.config, key=evaluation.key,
                       batch_size=spec.batch_size, progress=progress)
        out[name] = report.summary
    return out


def load_policy(template: Decoder, path: str) -> Decoder:
    """A copy of `template` with the parameters of `path`."""
    return load_params_into(nnx.clone(template), path)


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What `run_self_improvement` returns.

    Attributes:
      policy: the last completed round's policy.
      metrics: metrics.json of round 0 (evaluation only) .. the last
        completed round.
      complete: all R rounds finished (False after `stop_sft_at`).
    """

    policy: Decoder
    metrics: list[dict]
    complete: bool


def run_self_improvement(task, models: SolverModels, *, imagine: Imagine,
                         search: SearchSpec | Sequence[SearchSpec],
                         config: LoopConfig,
                         originals: Sequence[Problem],
                         evaluation: Evaluation | None, run_dir: str,
                         held_out: Callable[[str], bool] | None = None,
                         stop_sft_at: tuple[int, int] | None = None,
                         progress: bool = True) -> LoopResult:
    """Runs (or resumes) the loop of the module docstring.

    Args:
      task: the task (prompts, answers, gold solutions).
      models: the starting policy, its tokenizer, the critics (fixed) and
        the fast policy; each round replaces the policy.
      imagine: the prompt source.
      search: the searcher of the synthetic prompts, the same in every
        round, or R of them, round r's at index r - 1 (for example a
        hotter proposer once the policy has been fine-tuned on its own
        searched data and samples fewer distinct steps).
      config: the loop's settings.
      originals: original training problems (gold solutions to mix in).
      evaluation: the per-round held-out evaluation (None: none).
      run_dir: where everything goes.
      held_out: question -> True when it is a held-out problem (analysis:
        counts kept held-out prompts; None skips the count).
      stop_sft_at: (round, step): stop that round's SFT after `step`
        updates, as a kill would (regular checkpoints only), and return.
      progress: progress bars.

    Returns:
      `LoopResult`.
    """
    searches = round_searches(search, config.rounds)
    os.makedirs(run_dir, exist_ok=True)
    policy = models.policy
    metrics = []
    base_dir = os.path.join(run_dir, "round_0")
    os.makedirs(base_dir, exist_ok=True)
    metrics.append(_stage_eval(task, models, evaluation, base_dir, progress,
                               {"round": 0}))
    for r in range(1, config.rounds + 1):
        round_dir = os.path.join(run_dir, f"round_{r}")
        done = os.path.join(round_dir, "metrics.json")
        if os.path.exists(done):
            policy = load_policy(policy, os.path.join(round_dir,
                                                      POLICY_FILE))
            metrics.append(_read_json(done))
            continue
        round_models = dataclasses.replace(models, policy=policy)
        bar = tqdm(total=5, desc=f"round {r}", disable=not progress)
        record = {"round": r}
        prompts = _stage_imagine(imagine, r, policy, round_dir, record)
        bar.update(1)
        trajectories = _stage_search(task, round_models, searches[r - 1],
                                     config, prompts, r, round_dir, progress)
        bar.update(1)
        kept = filter_trajectories(trajectories,
                                   threshold=config.filter.threshold,
                                   top_share=config.filter.top_share)
        write_trajectories(os.path.join(round_dir, "kept.jsonl"), kept)
        record.update(_analysis(task, trajectories, kept, round_dir,
                                held_out))
        bar.update(1)
        trained = _stage_sft(task, round_models, config, kept, originals,
                             r, round_dir, record, stop_sft_at, progress)
        bar.update(1)
        if trained is None:
            bar.close()
            return LoopResult(policy=policy, metrics=metrics, complete=False)
        policy = trained
        record = _stage_eval(task, dataclasses.replace(models, policy=policy),
                             evaluation, round_dir, progress, record)
        bar.update(1)
        bar.close()
        _write_json(done, record)
        metrics.append(record)
    return LoopResult(policy=policy, metrics=metrics, complete=True)


def round_searches(search: SearchSpec | Sequence[SearchSpec],
                   rounds: int) -> tuple[SearchSpec, ...]:
    """The `SearchSpec` of rounds 1..R: `search` R times, or `search`
    itself when it holds R specs (any other count is an error)."""
    if isinstance(search, SearchSpec):
        return (search,) * rounds
    searches = tuple(search)
    if len(searches) != rounds or not all(
            isinstance(s, SearchSpec) for s in searches):
        raise ValueError(f"search: one SearchSpec or {rounds} of them (one "
                         f"per round), got {len(searches)} "
                         f"{[type(s).__name__ for s in searches]}")
    return searches


def _stage_imagine(imagine: Imagine, r: int, policy: Decoder,
                   round_dir: str, record: dict) -> list[im.Prompt]:
    if not os.path.exists(os.path.join(round_dir, im.PROMPTS_FILE)):
        im.write_imagined(round_dir, imagine(r, policy))
    prompts = im.read_prompts(round_dir)
    rejected = _read_json(os.path.join(round_dir, im.ANSWERS_FILE))[
        "rejected"]
    record["prompts"] = len(prompts)
    record["prompts_by_source"] = dict(
        collections.Counter(p.source for p in prompts))
    record["prompts_rejected"] = rejected
    return prompts


def _stage_search(task, models: SolverModels, search: SearchSpec,
                  config: LoopConfig, prompts: list[im.Prompt], r: int,
                  round_dir: str, progress: bool) -> list[Trajectory]:
    path = os.path.join(round_dir, "trajectories.jsonl")
    if not os.path.exists(path):
        found = search_prompts(task, prompts, method=search.method,
                               models=models, config=search.config,
                               key=1000 * config.seed + r,
                               batch_size=search.batch_size,
                               progress=progress)
        write_trajectories(path, score_trajectories(
            task, found, models=models, config=config.filter))
    return read_trajectories(path)


def _analysis(task, trajectories: list[Trajectory], kept: list[Trajectory],
              round_dir: str, held_out) -> dict:
    """Reads the answer key, after the filter: precision and counts."""
    answers = im.read_answers(round_dir)
    everything = filter_precision(
        [t for t in trajectories if t.finished], answers, task)
    scores = [t.score for t in trajectories if t.score is not None]
    out = {"searched": len(trajectories),
           "finished": sum(t.finished for t in trajectories),
           "search_tokens_per_prompt": float(np.mean(
               [t.generated_tokens for t in trajectories])),
           "score_mean": float(np.mean(scores)) if scores else None,
           "filter": filter_precision(kept, answers, task),
           "finished_precision": everything["precision"],
           "kept_held_out": (None if held_out is None else
                             sum(bool(held_out(t.question)) for t in kept))}
    _write_json(os.path.join(round_dir, "analysis.json"), out)
    return out


def _stage_sft(task, models: SolverModels, config: LoopConfig,
               kept: list[Trajectory], originals, r: int, round_dir: str,
               record: dict, stop_sft_at, progress: bool) -> Decoder | None:
    path = os.path.join(round_dir, POLICY_FILE)
    data, counts = sft_examples(task, models.tokenizer, kept, originals,
                                share=config.original_share,
                                seed=1000 * config.seed + r,
                                max_len=config.max_len)
    record["sft_data"] = counts
    if os.path.exists(path):  # Trained before a kill; metrics not yet.
        return load_policy(models.policy, path)
    model = nnx.clone(models.policy)
    stop = (stop_sft_at[1] if stop_sft_at is not None
            and stop_sft_at[0] == r else None)
    result = train(model, data, sft_loss,
                   dataclasses.replace(config.sft,
                                       seed=1000 * config.seed + r),
                   checkpoint_dir=os.path.join(round_dir, "sft"),
                   resume=True,
                   log_path=os.path.join(round_dir, "sft_log.jsonl"),
                   progress=progress, stop_at=stop)
    if result.step < config.sft.total_steps:
        return None
    losses = [h["loss"] for h in result.history if "loss" in h]
    record["sft"] = {"steps": result.step,
                     "final_loss": losses[-1] if losses else None,
                     "wall_time_s": round(result.wall_time_s, 1)}
    save_params(result.model, path, dtype=np.float32)
    return load_policy(models.policy, path)


def _stage_eval(task, models: SolverModels, evaluation, round_dir: str,
                progress: bool, record: dict) -> dict:
    path = os.path.join(round_dir, "eval.json")
    if evaluation is not None and not os.path.exists(path):
        _write_json(path, evaluate_round(task, models, evaluation,
                                         progress))
    if os.path.exists(path):
        record["eval"] = _read_json(path)
    if record["round"] == 0:
        _write_json(os.path.join(round_dir, "metrics.json"), record)
    return record
