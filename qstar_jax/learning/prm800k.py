"""Reader for PRM800K human step labels (openai/prm800k jsonl files).

Each line is one labelled solution: a JSON object with 'question'
('problem', 'ground_truth_answer', ...) and 'label' ('steps',
'finish_reason', ...). Every step lists one or more model 'completions'
(candidate steps, each with 'text' and a 'rating' in {-1, 0, 1, null}), an
optional 'human_completion' and 'chosen_completion' (an index or null).

The trajectory of an example follows, step by step:

1. the completion at index `chosen_completion` when it is not null;
2. otherwise the `human_completion` when present (a dict with 'text' and
   an optional 'rating', or a bare string). Labelers wrote these only when
   every model completion was rated -1, and they are +1 steps by the
   instructions, so a missing or null rating is read as 1;
3. otherwise the step ends the trajectory: it must be the last step. If it
   has exactly one completion (phase 2's first error, rated -1), that
   completion is the last step of the trajectory; with several completions
   (phase 1 alternatives, none taken) the trajectory stops before the step.

JSON is parsed with `json` only; nothing is evaluated. Any malformed line
raises `Prm800kFormatError` naming the file and the 1-based line number.
Blank lines are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterator

FINISH_REASONS = ("solution", "found_error", "give_up", "bad_problem")
"""The values of label.finish_reason."""


class Prm800kFormatError(ValueError):
    """A PRM800K line that does not follow the format."""


@dataclasses.dataclass(frozen=True)
class Prm800kExample:
    """One labelled solution, reduced to its trajectory.

    Attributes:
      problem: the MATH problem text.
      ground_truth_answer: the reference answer (None if the file has null).
      steps: the T step texts of the trajectory, in order.
      ratings: the T human ratings, each -1, 0, 1 or None (unrated).
      finish_reason: one of FINISH_REASONS.
      line: 1-based line number in the file.
      is_quality_control: the line is a quality-control question.
    """

    problem: str
    ground_truth_answer: str | None
    steps: tuple[str, ...]
    ratings: tuple[int | None, ...]
    finish_reason: str
    line: int
    is_quality_control: bool = False


class _Invalid(Exception):
    """Internal: a format problem, later given its file and line."""


def _get(obj: object, key: str, where: str) -> object:
    """obj[key]; raises _Invalid when obj is not a dict or lacks key."""
    if not isinstance(obj, dict):
        raise _Invalid(f"{where} is not a JSON object")
    if key not in obj:
        raise _Invalid(f"missing key {where}.{key}")
    return obj[key]


def _text(value: object, where: str) -> str:
    """Checks a string field."""
    if not isinstance(value, str):
        raise _Invalid(f"{where} is not a string")
    return value


def _rating(value: object, where: str) -> int | None:
    """Checks a rating: -1, 0, 1 or null (bools rejected)."""
    if value is not None and (type(value) is not int
                              or value not in (-1, 0, 1)):
        raise _Invalid(f"{where} = {value!r} is not -1, 0, 1 or null")
    return value


def _trajectory(steps: object) -> tuple[list[str], list[int | None]]:
    """The step texts and ratings along the chosen path (module docstring)."""
    if not isinstance(steps, list):
        raise _Invalid("label.steps is not a list")
    texts, ratings = [], []
    for t, step in enumerate(steps):
        where = f"label.steps[{t}]"
        completions = _get(step, "completions", where)
        chosen = _get(step, "chosen_completion", where)
        if not isinstance(completions, list) or not completions:
            raise _Invalid(f"{where}.completions is not a non-empty list")
        parsed = [(_text(_get(c, "text", f"{where}.completions[{i}]"),
                         f"{where}.completions[{i}].text"),
                   _rating(_get(c, "rating", f"{where}.completions[{i}]"),
                           f"{where}.completions[{i}].rating"))
                  for i, c in enumerate(completions)]
        human = step.get("human_completion")
        if chosen is not None:
            if (isinstance(chosen, bool) or not isinstance(chosen, int)
                    or not 0 <= chosen < len(parsed)):
                raise _Invalid(f"{where}.chosen_completion = {chosen!r} is "
                               f"not an index of {len(parsed)} completions")
            texts.append(parsed[chosen][0])
            ratings.append(parsed[chosen][1])
        elif human is not None:
            if isinstance(human, str):
                text, rating = human, 1
            else:
                text = _text(_get(human, "text", f"{where}.human_completion"),
                             f"{where}.human_completion.text")
                rating = _rating(human.get("rating"),
                                 f"{where}.human_completion.rating")
                rating = 1 if rating is None else rating
            texts.append(text)
            ratings.append(rating)
        else:
            if t != len(steps) - 1:
                raise _Invalid(f"{where} has no chosen or human completion "
                               "but is not the last step")
            if len(parsed) == 1:
                texts.append(parsed[0][0])
                ratings.append(parsed[0][1])
    return texts, ratings


def _decode(raw: bytes) -> str:
    """UTF-8 text of one line; raises _Invalid."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Invalid(f"not UTF-8 at byte {err.start}") from None


def _parse_line(text: str, line: int) -> Prm800kExample:
    """One example from one JSON line; raises _Invalid."""
    def reject_constant(name: str) -> None:
        raise _Invalid(f"non-standard JSON constant {name}")

    try:
        record = json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as err:
        raise _Invalid(f"bad JSON: {err.msg} at column {err.colno}"
                       ) from None
    except RecursionError:
        raise _Invalid("bad JSON: nested too deeply") from None
    question = _get(record, "question", "record")
    label = _get(record, "label", "record")
    answer = _get(question, "ground_truth_answer", "question")
    if answer is not None:
        answer = _text(answer, "question.ground_truth_answer")
    finish = _get(label, "finish_reason", "label")
    if finish not in FINISH_REASONS:
        raise _Invalid(f"label.finish_reason = {finish!r} is not one of "
                       f"{FINISH_REASONS}")
    quality = record.get("is_quality_control_question", False)
    if not isinstance(quality, bool):
        raise _Invalid("is_quality_control_question is not a boolean")
    steps, ratings = _trajectory(_get(label, "steps", "label"))
    return Prm800kExample(
        problem=_text(_get(question, "problem", "question"),
                      "question.problem"),
        ground_truth_answer=answer, steps=tuple(steps),
        ratings=tuple(ratings), finish_reason=finish, line=line,
        is_quality_control=quality)


def iter_prm800k(path: str | os.PathLike, *,
                 skip_quality_control: bool = False
                 ) -> Iterator[Prm800kExample]:
    """Yields the examples of a PRM800K jsonl file, one per non-blank line.

    Args:
      path: the .jsonl file (UTF-8).
      skip_quality_control: leave out quality-control questions.

    Yields:
      Prm800kExample, in file order.

    Raises:
      Prm800kFormatError: a malformed line ("<path>:<line>: <problem>").
    """
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                example = _parse_line(_decode(raw), line)
            except _Invalid as err:
                raise Prm800kFormatError(f"{os.fspath(path)}:{line}: {err}"
                                         ) from None
            if skip_quality_control and example.is_quality_control:
                continue
            yield example


def read_prm800k(path: str | os.PathLike, *,
                 skip_quality_control: bool = False) -> list[Prm800kExample]:
    """All examples of a PRM800K jsonl file (see `iter_prm800k`).

    Args:
      path: the .jsonl file.
      skip_quality_control: leave out quality-control questions.

    Returns:
      list of Prm800kExample, in file order.
    """
    return list(iter_prm800k(path,
                             skip_quality_control=skip_quality_control))


def step_labels(example: Prm800kExample, *, neutral_as: float = 1.0
                ) -> list[float]:
    """PRM targets of the T steps: 1 -> 1.0, -1 -> 0.0, 0 -> `neutral_as`.

    The default counts a neutral step (correct but no progress) as
    acceptable, the convention OpenAI's PRM800K-trained PRM uses; pass 0.0
    to count it as bad, or 0.5 for a soft middle.

    Args:
      example: one example with T steps.
      neutral_as: the target of a 0 rating.

    Returns:
      [T] list of float targets.

    Raises:
      ValueError: a step is unrated (None); filter such examples first.
    """
    targets = {1: 1.0, -1: 0.0, 0: float(neutral_as)}
    for t, rating in enumerate(example.ratings):
        if rating is None:
            raise ValueError(f"step {t} of the example at line "
                             f"{example.line} is unrated")
    return [targets[rating] for rating in example.ratings]
