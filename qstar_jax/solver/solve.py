"""From a `Task` and its problems to graded answers in one call.

`solve(task, problems, method=..., models=..., config=...)` runs any method
of the library the same way:

1. prompts: `task.format_prompt` (plain or chat, as the task writes it),
   tokenized and right-padded to the method's prompt width (a prompt that
   does not fit is a `CacheOverflowError` naming the problem; nothing is
   cut); the models' contexts are checked against the widths;
2. the stop rule from the task (`states.task_stop_rule`: its delimiter,
   EOS, its optional `final_marker`);
3. keys: problem p gets `fold_in(key, crc32(p.uid) mod 2**31)`, so its
   result depends on the key and the problem only, never on its position
   or batch;
4. the method's jitted search or sampler on fixed-shape batches of
   `batch_size` rows (the last batch padded with copies of its first row),
   with a progress bar;
5. each problem's solution decoded, its answer extracted and graded by the
   task (`records.grade_outcome`: an unfinished solution earns nothing),
   and a summary (`records.summarize`).

Methods (`METHODS`, the config type each takes):

| name | config | models needed |
| --- | --- | --- |
| 'greedy' | `GreedyConfig` | policy |
| 'best_of_n' | `BestOfNConfig` | policy and the critic it names |
| 'majority_vote' | `MajorityVoteConfig` | policy |
| 'beam' | `BeamConfig` | policy and the critic it scores with |
| 'qstar' | `QStarConfig` | policy, prm, qvm |
| 'mcts' | `MCTSSolveConfig` | policy (and value, prm, orm, fast_policy) |
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.proposer import ProposerConfig
from qstar_jax.sampling.states import (check_context, encode_task_prompts,
                                       pad_batch, task_stop_rule)
from qstar_jax.search.astar import AStarConfig
from qstar_jax.search.beam import BeamConfig
from qstar_jax.search.qstar import QStarConfig
from qstar_jax.solver import sampled, searched
from qstar_jax.solver.records import SolveReport, grade_outcome, summarize
from qstar_jax.tasks.base import Problem


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SolverModels:
    """The networks a method may use, with the policy's tokenizer.

    Attributes:
      policy: the policy decoder.
      tokenizer: its tokenizer (`encode`, `decode`, `token_texts`,
        `vocab_size`, `eos_id`, `pad_id`).
      prm, qvm, value, orm: critics (None: absent).
      fast_policy: eta-MCTS's rollout policy (None: the policy).
      add_bos: prepend BOS to every prompt (None: the tokenizer's default,
        `tokenizer.encode(text)`; the shipped tiny policies need True).
    """

    policy: Decoder
    tokenizer: Any
    prm: Critic | None = None
    qvm: Critic | None = None
    value: Critic | None = None
    orm: Critic | None = None
    fast_policy: Decoder | None = None
    add_bos: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """A method in the registry.

    Attributes:
      name: its `solve(method=...)` name.
      config_type: the config it takes.
      default_config: builds the config used when none is given.
      run: the batch runner, `run(models, task, tokens [B, P0], lengths
        [B], keys [B], stop, config) -> list[records.Outcome]` (B rows).
      needs: config -> the `SolverModels` fields that must be set.
      prompt_width: config -> P0.
      new_tokens: config -> the most tokens generated after a state of
        P0 tokens (for the models' context check).
    """

    name: str
    config_type: type
    default_config: Callable[[], Any]
    run: Callable
    needs: Callable[[Any], tuple[str, ...]]
    prompt_width: Callable[[Any], int]
    new_tokens: Callable[[Any], int]


def _default_qstar() -> QStarConfig:
    return QStarConfig(search=AStarConfig(), proposer=ProposerConfig(),
                       state_width=512)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method(name="greedy", config_type=sampled.GreedyConfig,
           default_config=sampled.GreedyConfig, run=sampled.run_greedy,
           needs=lambda c: (), prompt_width=lambda c: c.prompt_width,
           new_tokens=lambda c: c.max_tokens),
    Method(name="best_of_n", config_type=sampled.BestOfNConfig,
           default_config=sampled.BestOfNConfig, run=sampled.run_best_of_n,
           needs=lambda c: (c.critic,),
           prompt_width=lambda c: c.prompt_width,
           new_tokens=lambda c: c.max_tokens),
    Method(name="majority_vote", config_type=sampled.MajorityVoteConfig,
           default_config=sampled.MajorityVoteConfig,
           run=sampled.run_majority_vote, needs=lambda c: (),
           prompt_width=lambda c: c.prompt_width,
           new_tokens=lambda c: c.max_tokens),
    Method(name="beam", config_type=BeamConfig, default_config=BeamConfig,
           run=searched.run_beam, needs=lambda c: (c.score,),
           prompt_width=lambda c: c.state_width,
           new_tokens=lambda c: c.proposer.max_step_tokens),
    Method(name="qstar", config_type=QStarConfig,
           default_config=_default_qstar, run=searched.run_qstar,
           needs=lambda c: ("prm", "qvm"),
           prompt_width=lambda c: c.state_width,
           new_tokens=lambda c: c.proposer.max_step_tokens),
    Method(name="mcts", config_type=searched.MCTSSolveConfig,
           default_config=searched.MCTSSolveConfig, run=searched.run_mcts,
           needs=lambda c: (), prompt_width=lambda c: c.mcts.state_width,
           new_tokens=lambda c: max(c.mcts.max_step_tokens,
                                    c.mcts.rollout_tokens)),
)}


def problem_keys(key: jax.Array | int, problems: Sequence[Problem]
                 ) -> jax.Array:
    """[N] PRNG keys, `fold_in(key, crc32(uid) mod 2**31)` per problem.

    Args:
      key: a PRNG key or an int seed.
      problems: N problems (their `uid`s).
    """
    if isinstance(key, int):
        key = jax.random.key(key)
    ids = jnp.asarray([zlib.crc32(p.uid.encode()) & 0x7FFFFFFF
                       for p in problems], jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)


def _check_models(spec: Method, models: SolverModels, config) -> None:
    if not isinstance(models, SolverModels):
        raise ValueError(f"solve: models must be SolverModels, got "
                         f"{type(models).__name__}")
    for name in spec.needs(config):
        if getattr(models, name) is None:
            raise ValueError(
                f"solve(method={spec.name!r}): models.{name} is None; this "
                f"method with this config needs "
                f"{', '.join('models.' + n for n in spec.needs(config))}")
    width, new = spec.prompt_width(config), spec.new_tokens(config)
    for name in ("policy", "fast_policy", "prm", "qvm", "value", "orm"):
        model = getattr(models, name)
        if model is not None:
            config_of = model.config if name in ("policy", "fast_policy") \
                else model.backbone.config
            check_context(config_of, width, new)


def _pad_keys(keys: jax.Array, rows: int) -> jax.Array:
    if keys.shape[0] == rows:
        return keys
    return jnp.concatenate([keys, jnp.repeat(keys[:1], rows - keys.shape[0],
                                             axis=0)])


def solve(task, problems: Sequence[Problem], *, method: str,
          models: SolverModels, config: Any = None,
          key: jax.Array | int = 0, batch_size: int = 8,
          progress: bool = True) -> SolveReport:
    """Solves problems of a task with one method (module docstring).

    Args:
      task: a `qstar_jax.tasks.base.Task`.
      problems: the N problems (any sequence of `Problem`s).
      method: a name in `METHODS`.
      models: the policy, its tokenizer and the critics.
      config: the method's config (None: its default).
      key: a PRNG key or an int seed; each problem's key derives from it
        and the problem's uid (`problem_keys`).
      batch_size: B, rows per jitted call (fixed, so a problem's result
        never depends on the rest of its batch).
      progress: show a progress bar.

    Returns:
      `SolveReport`: one `ProblemRecord` per problem and the summary.

    Raises:
      ValueError: an unknown method, a config of another type, a model the
        method needs that is missing, no problems.
      CacheOverflowError: a prompt longer than the method's prompt width,
        or widths beyond a model's context.
    """
    if method not in METHODS:
        raise ValueError(f"solve: unknown method {method!r}; use one of "
                         f"{tuple(METHODS)}")
    spec = METHODS[method]
    config = spec.default_config() if config is None else config
    if not isinstance(config, spec.config_type):
        raise ValueError(f"solve(method={method!r}) takes a "
                         f"{spec.config_type.__name__}, got "
                         f"{type(config).__name__}")
    problems = list(problems)
    if not problems:
        raise ValueError("solve: no problems given")
    if batch_size < 1:
        raise ValueError(f"solve: batch_size must be >= 1, got {batch_size}")
    _check_models(spec, models, config)
    tokenizer = models.tokenizer
    stop = task_stop_rule(tokenizer, task)
    tokens, lengths = encode_task_prompts(
        tokenizer, task, problems, spec.prompt_width(config),
        add_bos=models.add_bos)
    keys = problem_keys(key, problems)
    records = []
    start_time = time.perf_counter()
    with tqdm(total=len(problems), desc=method, disable=not progress) as bar:
        for start in range(0, len(problems), batch_size):
            rows = slice(start, start + batch_size)
            chunk = problems[rows]
            outcomes = spec.run(
                models, task, pad_batch(tokens[rows], batch_size),
                pad_batch(lengths[rows], batch_size),
                _pad_keys(keys[rows], batch_size), stop, config)
            records += [grade_outcome(task, tokenizer, p, o)
                        for p, o in zip(chunk, outcomes)]
            bar.update(len(chunk))
    return SolveReport(method=method, config=config, records=records,
                       summary=summarize(records,
                                         time.perf_counter() - start_time))
