"""Search synthetic prompts and keep what the critic trusts, without answers.

The stages of self-improvement that produce training data see `Prompt`s
only (a uid, a question, a source: `imagination.Prompt` has no answer
field), so no gold answer can reach them:

* `search_prompts`: one trajectory per prompt from any `solve` method
  (eta-MCTS, Q*, or plain policy samples through best-of-1 for the
  control); the problems `solve` grades are `imagination.as_problem` of
  the prompts, whose answer is blank, and the task `solve` sees is an
  `UngradedTask` (its reward is always 0; the grades are dropped).
* `score_trajectories`: the filter critic's score of each trajectory
  (prompt and solution in one pass; a PRM's step scores aggregated, an ORM,
  value or QVM read at the last token).
* `filter_trajectories`: the kept trajectories: finished, with an answer
  the task can read, and a score at or above the threshold.

`filter_precision` (and `is_right`, its grade of one trajectory) are the
only functions here that read an answer key; they are analysis (the share
of kept trajectories whose answer is right), run on the kept list after
the filter has decided.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.learning.imagination import Prompt, as_problem
from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import forward_logits
from qstar_jax.sampling.states import pad_batch, task_stop_rule
from qstar_jax.search.baselines import aggregate
from qstar_jax.solver import SolverModels, solve

CRITIC_KINDS = ("prm", "orm", "value", "qvm", "policy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trajectory:
    """One searched solution of a synthetic prompt (no grade, no answer
    key).

    Attributes:
      uid: the prompt's uid.
      question: the prompt's question.
      text: the solution text.
      finished: the method returned a finished solution.
      answer: `task.extract_answer(text)` (None when unfinished or none).
      score: the filter critic's score (None before scoring).
      generated_tokens: tokens the method sampled for the prompt.
    """

    uid: str
    question: str
    text: str
    finished: bool
    answer: str | None
    score: float | None = None
    generated_tokens: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """Which trajectories become training data.

    Attributes:
      critic: the `SolverModels` field that scores ('prm', 'orm', 'value'
        or 'qvm'), or 'policy': the policy's own mean log-probability per
        solution token (a policy-only signal; no critic needed).
      aggregation: a PRM's step scores to one number ('min', 'max', 'sum',
        'last'); other critics read the last token.
      threshold: the lowest score kept.
      top_share: then at most this share of the eligible trajectories,
        the best scored (1.0: all that pass the threshold).
      width: tokens of prompt plus solution the critic reads (a longer
        trajectory is not kept).
      batch_size: rows per jitted scoring call.
    """

    critic: str = "prm"
    aggregation: str = "min"
    threshold: float = 0.5
    top_share: float = 1.0
    width: int = 224
    batch_size: int = 64

    def __post_init__(self):
        if self.critic not in CRITIC_KINDS:
            raise ValueError(f"FilterConfig.critic={self.critic!r}; use one "
                             f"of {CRITIC_KINDS}")
        if self.aggregation not in ("min", "max", "sum", "last"):
            raise ValueError(f"FilterConfig.aggregation="
                             f"{self.aggregation!r}; use min, max, sum or "
                             "last")
        if not 0.0 < self.top_share <= 1.0:
            raise ValueError(f"FilterConfig.top_share={self.top_share} must "
                             "be in (0, 1]")


class UngradedTask:
    """A task that cannot grade: `reward` is 0.0 for every solution, every
    other attribute is the wrapped task's. `search_prompts` hands this to
    `solve`, whose problems carry no answer to grade against."""

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)

    def reward(self, problem, solution) -> float:
        del problem, solution
        return 0.0


def _check_prompts(name: str, prompts) -> list[Prompt]:
    prompts = list(prompts)
    for p in prompts:
        if not isinstance(p, Prompt):
            raise TypeError(f"{name}: expected imagination.Prompt (a prompt "
                            f"without answer), got {type(p).__name__}")
    return prompts


def search_prompts(task, prompts: Sequence[Prompt], *, method: str,
                   models: SolverModels, config, key: jax.Array | int,
                   batch_size: int = 8,
                   progress: bool = True) -> list[Trajectory]:
    """One trajectory per prompt from `solve(method=...)`.

    Args:
      task: the task (prompt format, stop rule, answer extraction).
      prompts: N prompts (`imagination.Prompt` only: a `Problem` carrying
        an answer is refused).
      method, models, config, key, batch_size, progress: as `solve`.

    Returns:
      N unscored trajectories, in prompt order.
    """
    prompts = _check_prompts("search_prompts", prompts)
    report = solve(UngradedTask(task), [as_problem(p) for p in prompts],
                   method=method,
                   models=models, config=config, key=key,
                   batch_size=batch_size, progress=progress)
    return [Trajectory(uid=p.uid, question=p.question, text=r.text,
                       finished=r.finished,
                       answer=task.extract_answer(r.text) if r.finished
                       else None, generated_tokens=r.generated_tokens)
            for p, r in zip(prompts, report.records)]


@jax.jit
def _token_scores(critic: Critic, tokens, lengths):
    return critic(tokens, lengths)


@jax.jit
def _token_log_probs(policy: Decoder, tokens, lengths):
    """[N, L]: entry i is log p(token i | tokens < i) (0 at i = 0)."""
    logits = forward_logits(policy, tokens, lengths)[:, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(picked, ((0, 0), (1, 0)))


def score_trajectories(task, trajectories: Sequence[Trajectory], *,
                       models: SolverModels, config: FilterConfig
                       ) -> list[Trajectory]:
    """The trajectories with the filter critic's scores.

    The critic reads BOS (when `models.add_bos`), the task's prompt and the
    solution text in one causal pass ([batch_size, width] rows). A PRM's
    score aggregates its scores at the step ends (the delimiter or end
    tokens of the solution, and its last token); the other critics' is the
    score at the last token; 'policy' is the mean log-probability of the
    solution's tokens under `models.policy`. A trajectory with no solution
    tokens, or one longer than `config.width`, gets score None.

    Returns:
      New `Trajectory`s (same order) with `score` set.
    """
    critic = (models.policy if config.critic == "policy"
              else getattr(models, config.critic))
    if critic is None:
        raise ValueError(f"score_trajectories: models.{config.critic} is "
                         "None; the filter needs its critic")
    tok = models.tokenizer
    stop = task_stop_rule(tok, task)
    delimiter = np.asarray(stop.delimiter) | np.asarray(stop.end)
    rows, spans, fits = [], [], []
    for t in trajectories:
        prompt = tok.encode(task.format_prompt(as_problem(Prompt(
            uid=t.uid, question=t.question, source=""))),
            add_bos=bool(models.add_bos))
        solution = tok.encode(t.text, add_bos=False) if t.text else []
        ids = prompt + solution
        fits.append(bool(solution) and len(ids) <= config.width)
        rows.append(ids[:config.width] if fits[-1] else prompt[:1])
        spans.append((len(prompt), len(ids)))
    scores = []
    b = config.batch_size
    for start in range(0, len(rows), b):
        chunk = rows[start:start + b]
        tokens = np.full((len(chunk), config.width), tok.pad_id, np.int32)
        lengths = np.asarray([len(r) for r in chunk], np.int32)
        for j, r in enumerate(chunk):
            tokens[j, :len(r)] = r
        first = np.asarray([spans[i][0] for i in range(start,
                                                       start + len(chunk))])
        last = np.asarray([spans[i][1] for i in range(start,
                                                      start + len(chunk))])
        run = (_token_log_probs if config.critic == "policy"
               else _token_scores)
        per_token = run(critic, jnp.asarray(pad_batch(tokens, b)),
                        jnp.asarray(pad_batch(lengths, b)))[:len(chunk)]
        if config.critic == "policy":
            pos = np.arange(config.width)[None]
            mask = (pos >= first[:, None]) & (pos < last[:, None])
            values = (jnp.sum(jnp.where(mask, per_token, 0.0), axis=1)
                      / np.maximum(last - first, 1))
        elif config.critic == "prm":
            pos = np.arange(config.width)[None]
            mask = ((pos >= first[:, None]) & (pos < last[:, None])
                    & (delimiter[tokens] | (pos == last[:, None] - 1)))
            mask[~np.asarray(fits[start:start + len(chunk)])] = True
            values = aggregate(per_token, jnp.asarray(mask),
                               config.aggregation)
        else:
            values = jnp.take_along_axis(
                per_token, jnp.asarray(np.maximum(last - 1, 0))[:, None],
                axis=1)[:, 0]
        values = np.asarray(jax.device_get(values))
        scores += [float(values[j]) if fits[start + j] else None
                   for j in range(len(chunk))]
    return [dataclasses.replace(t, score=s)
            for t, s in zip(trajectories, scores)]


def filter_trajectories(trajectories: Sequence[Trajectory], *,
                        threshold: float,
                        top_share: float = 1.0) -> list[Trajectory]:
    """The trajectories to train on: finished, with an answer, scored at
    or above `threshold`; of those the best `ceil(top_share * eligible)`
    by score (ties to the earlier), in input order. No answer key is read
    or accepted."""
    kept = []
    for t in trajectories:
        if not isinstance(t, Trajectory):
            raise TypeError(f"filter_trajectories: expected Trajectory, got "
                            f"{type(t).__name__}")
        if (t.finished and t.answer is not None and t.score is not None
                and np.isfinite(t.score) and t.score >= threshold):
            kept.append(t)
    count = math.ceil(top_share * len(kept) - 1e-9)
    best = sorted(range(len(kept)), key=lambda i: (-kept[i].score, i))
    chosen = set(best[:count])
    return [t for i, t in enumerate(kept) if i in chosen]


def filter_precision(kept: Sequence[Trajectory],
                     answers: dict[str, str | None], task) -> dict:
    """Analysis only: how many kept trajectories are right.

    Args:
      kept: the filter's output.
      answers: the answer key (uid -> answer, None where the source does
        not know it).
      task: grades each kept text against its answer (`task.reward` of a
        problem with that answer).

    Returns:
      {'kept', 'known' (kept with a known answer), 'correct', 'precision'
      (correct / known, None when none is known)}.
    """
    known = [t for t in kept if answers.get(t.uid) is not None]
    correct = sum(is_right(t, answers[t.uid], task) for t in known)
    return {"kept": len(kept), "known": len(known), "correct": correct,
            "precision": correct / len(known) if known else None}


def is_right(trajectory: Trajectory, answer: str, task) -> bool:
    """Analysis only: whether the trajectory's text earns full reward
    against `answer` (`task.reward` of a problem with that answer)."""
    problem = dataclasses.replace(as_problem(Prompt(
        uid=trajectory.uid, question=trajectory.question, source="")),
        answer=answer)
    return task.reward(problem, trajectory.text) == 1.0
