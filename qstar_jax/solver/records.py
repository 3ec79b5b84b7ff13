"""What `solve` returns: one record per problem and a summary.

A method's batch runner gives, per problem, an `Outcome` (the chosen
solution's tokens, whether it is a finished solution, the compute spent and
what the method reports); `grade_outcome` decodes and grades it with the
task, and `summarize` turns the records into the library's results entry
(`qstar_jax.results.method_summary`: accuracy with a Wilson 95% interval,
tokens and model calls per problem, seconds).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

from qstar_jax.results import method_summary


class Outcome(NamedTuple):
    """A method's answer to one problem, before decoding (host values).

    Attributes:
      tokens: the solution's token ids (no prompt).
      finished: the solution ended by the task's rule (an end token, or a
        final-answer step that was not cut; see `search.step_limits`).
      generated_tokens: tokens the model sampled for the problem (every
        sample, discarded ones included).
      model_calls: batched model calls the problem took part in.
      details: what the method reports (numbers and short strings).
    """

    tokens: list[int]
    finished: bool
    generated_tokens: int
    model_calls: int
    details: dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProblemRecord:
    """One problem's result.

    Attributes:
      uid: the problem's uid.
      text: the decoded solution (special tokens removed; '' when the
        method found none).
      answer: `task.extract_answer(text)` of a finished solution, else None.
      reward: `task.reward(problem, text)` of a finished solution, else 0.0
        (an unfinished text, such as one cut at a token limit, earns
        nothing whatever it says).
      finished: the method returned a finished solution.
      generated_tokens: tokens sampled for the problem.
      model_calls: batched model calls the problem took part in.
      details: what the method reports (status, expansions, counts of cut
        steps and overflowing states, scores, votes, ...).
    """

    uid: str
    text: str
    answer: str | None
    reward: float
    finished: bool
    generated_tokens: int
    model_calls: int
    details: dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class SolveReport:
    """What `solve` returns.

    Attributes:
      method: the method's name.
      config: the method's config.
      records: one `ProblemRecord` per problem, in the order given.
      summary: `results.method_summary` of the records: n, accuracy,
        accuracy_ci95, tokens_per_problem, model_calls_per_problem,
        seconds (the whole call, compilation included), finished (share of
        finished solutions) and details (numeric details averaged per
        problem, string details counted).
    """

    method: str
    config: Any
    records: list[ProblemRecord]
    summary: dict


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Token ids to text, special tokens removed."""
    return tokenizer.decode([int(i) for i in ids], skip_special=True)


def grade_outcome(task, tokenizer, problem, outcome: Outcome
                  ) -> ProblemRecord:
    """Decodes an `Outcome` and grades it with the task's own rules."""
    text = decode(tokenizer, outcome.tokens)
    answer, reward = None, 0.0
    if outcome.finished:
        answer = task.extract_answer(text)
        reward = float(task.reward(problem, text))
    return ProblemRecord(
        uid=problem.uid, text=text, answer=answer, reward=reward,
        finished=bool(outcome.finished),
        generated_tokens=int(outcome.generated_tokens),
        model_calls=int(outcome.model_calls), details=dict(outcome.details))


def _aggregate(details: Sequence[dict]) -> dict:
    """Numeric details averaged over the problems that report them,
    strings counted (None: not reported)."""
    out = {}
    for key in dict.fromkeys(k for d in details for k in d):
        values = [d[key] for d in details if d.get(key) is not None]
        if not values:
            continue
        if all(isinstance(v, (bool, int, float, np.number)) for v in values):
            out[key] = float(np.mean([float(v) for v in values]))
        elif all(isinstance(v, str) for v in values):
            out[key] = dict(collections.Counter(values))
    return out


def summarize(records: Sequence[ProblemRecord], seconds: float) -> dict:
    """The summary of `SolveReport` (see there)."""
    return method_summary(
        [r.reward for r in records],
        tokens=[r.generated_tokens for r in records],
        model_calls=[r.model_calls for r in records], seconds=seconds,
        finished=float(np.mean([r.finished for r in records])),
        details=_aggregate([r.details for r in records]))
