"""GSM8K problems: parsing solutions into steps and loading the packaged data.

The GSM8K jsonl files (MIT license, Cobbe et al. 2021, arXiv 2110.14168) ship
in ``qstar_jax/tasks/data/gsm8k/``; see the README there. Each row is a JSON
object with string fields ``question`` and ``answer``. An answer holds one
reasoning step per line, calculator annotations ``<<expression=result>>`` and
a last line ``#### <final answer>``.

Parsing rules (:func:`parse_answer`):

* ``steps`` are the non-empty lines before the ``####`` line, stripped of
  surrounding whitespace. The ``#### N`` line itself is **not** a step: it
  only restates the final answer.
* ``annotations`` are the texts inside ``<<...>>`` (without the brackets, e.g.
  ``"48/2=24"``) in order of appearance over all steps.
* ``short_answer`` is the text after ``####``, stripped, as written (it may
  hold thousands separators such as ``1,080``; see
  :func:`qstar_jax.tasks.grading.normalize_number`).

Loading rules (:func:`load_gsm8k_with_stats`): whitespace-only lines are
ignored; rows that are not UTF-8, not JSON, not an object, lack a string
``question`` or ``answer``, have an empty question, or lack exactly one
non-empty, final ``####`` line are skipped and counted, with one
:class:`MalformedRowsWarning` naming how many and the first line numbers
(1-based). A problem's ``uid`` is ``"<split>-<i>"`` with ``i`` the 0-based
line index in the file, so uids stay stable when other rows are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
import warnings
from importlib.resources.abc import Traversable
from typing import Final

SPLITS: Final = ("train", "test")
_ANNOTATION = re.compile(r"<<([^<>\n]*)>>")
_MAX_LINES_SHOWN: Final = 5


class MalformedRowsWarning(UserWarning):
    """Warns that malformed GSM8K rows were skipped while loading."""


@dataclasses.dataclass(frozen=True)
class Gsm8kProblem:
    """One GSM8K problem with its solution split into steps.

    Attributes:
        uid: Stable id ``"<split>-<line index>"``, e.g. ``"train-0"``.
        question: The problem statement.
        answer: The full gold solution, including the ``#### N`` line.
        steps: The solution lines before the ``####`` line.
        annotations: The ``<<...>>`` calculator annotations (inner text).
        short_answer: The final answer as written after ``####``.
    """

    uid: str
    question: str
    answer: str
    steps: tuple[str, ...]
    annotations: tuple[str, ...]
    short_answer: str


@dataclasses.dataclass(frozen=True)
class Gsm8kLoadResult:
    """Problems loaded from one file, and what was skipped.

    Attributes:
        problems: The valid problems, in file order.
        skipped_lines: 1-based line numbers of the malformed rows.
        source: Where the rows came from (a path or a packaged resource).
    """

    problems: tuple[Gsm8kProblem, ...]
    skipped_lines: tuple[int, ...]
    source: str

    @property
    def n_skipped(self) -> int:
        """Number of malformed rows that were skipped."""
        return len(self.skipped_lines)


def parse_answer(answer: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Splits a GSM8K solution into steps, annotations and the short answer.

    Args:
        answer: The solution text, e.g.
            ``"Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n...\\n#### 72"``.

    Returns:
        ``(steps, annotations, short_answer)``; see the module docstring.

    Raises:
        ValueError: Unless there is exactly one ``####`` line, it holds an
            answer and no non-empty line follows it.
    """
    lines = [line.strip() for line in answer.splitlines()]
    hash_lines = [i for i, line in enumerate(lines) if line.startswith("####")]
    if len(hash_lines) != 1:
        raise ValueError(f"answer has {len(hash_lines)} '####' lines, expected 1")
    last = hash_lines[0]
    short_answer = lines[last][len("####"):].strip()
    if not short_answer:
        raise ValueError("the '####' line is empty")
    if any(lines[last + 1:]):
        raise ValueError("text after the '####' line")
    steps = tuple(line for line in lines[:last] if line)
    annotations = tuple(a for step in steps for a in _ANNOTATION.findall(step))
    return steps, annotations, short_answer


def parse_problem(row: object, uid: str) -> Gsm8kProblem:
    """Builds a problem from one decoded JSON row.

    Args:
        row: The decoded JSON value of one line.
        uid: The uid to give the problem.

    Returns:
        The parsed problem.

    Raises:
        ValueError: If the row is malformed (see the module docstring).
    """
    if not isinstance(row, dict):
        raise ValueError(f"row is a {type(row).__name__}, not an object")
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError("'question' and 'answer' must be strings")
    if not question.strip():
        raise ValueError("empty question")
    steps, annotations, short_answer = parse_answer(answer)
    return Gsm8kProblem(uid, question, answer, steps, annotations, short_answer)


def parse_jsonl(data: bytes | str, split: str, source: str = "<jsonl>") -> Gsm8kLoadResult:
    """Parses GSM8K jsonl content, skipping and counting malformed rows.

    Emits no warning; see :func:`warn_skipped` and :func:`load_gsm8k_with_stats`.

    Args:
        data: The file content.
        split: Split name used in the uids.
        source: Description of where ``data`` came from.

    Returns:
        The parsed problems and the skipped line numbers.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    problems, skipped = [], []
    for index, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            problems.append(parse_problem(row, f"{split}-{index}"))
        except (ValueError, RecursionError):  # JSON and Unicode errors included.
            skipped.append(index + 1)
    return Gsm8kLoadResult(tuple(problems), tuple(skipped), source)


def warn_skipped(result: Gsm8kLoadResult) -> None:
    """Emits one :class:`MalformedRowsWarning` if rows were skipped.

    Args:
        result: The outcome of :func:`parse_jsonl`.
    """
    if not result.skipped_lines:
        return
    shown = ", ".join(map(str, result.skipped_lines[:_MAX_LINES_SHOWN]))
    more = ", ..." if result.n_skipped > _MAX_LINES_SHOWN else ""
    warnings.warn(
        f"GSM8K: skipped {result.n_skipped} malformed row(s) in {result.source} "
        f"(line {shown}{more})", MalformedRowsWarning, stacklevel=3)


def packaged_data_dir() -> Traversable:
    """Returns the packaged ``data/gsm8k`` directory resource.

    Returns:
        The directory (use ``importlib.resources.as_file`` for a real path).
    """
    return importlib.resources.files(__package__).joinpath("data", "gsm8k")


def packaged_file(split: str) -> Traversable:
    """Returns the packaged jsonl resource of a split.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        The resource (use ``read_bytes`` or ``importlib.resources.as_file``).

    Raises:
        ValueError: If the split is unknown.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GSM8K split {split!r}; expected one of {SPLITS}")
    return packaged_data_dir().joinpath(f"{split}.jsonl")


def load_gsm8k_with_stats(
        split: str, path: str | os.PathLike[str] | None = None) -> Gsm8kLoadResult:
    """Loads a GSM8K split and reports the skipped rows.

    Args:
        split: ``"train"`` or ``"test"``; with ``path``, any name (it is only
            used in the uids).
        path: A jsonl file to read instead of the packaged one.

    Returns:
        The problems and the skipped line numbers; one warning is emitted if
        rows were skipped.

    Raises:
        ValueError: If the split is unknown or no valid row was found.
    """
    if path is None:
        resource = packaged_file(split)
        result = parse_jsonl(resource.read_bytes(), split, f"packaged {split}.jsonl")
    else:
        with open(path, "rb") as f:
            result = parse_jsonl(f.read(), split, os.fspath(path))
    warn_skipped(result)
    if not result.problems:
        raise ValueError(f"no valid GSM8K rows in {result.source}")
    return result


def load_gsm8k(split: str, path: str | os.PathLike[str] | None = None) -> list[Gsm8kProblem]:
    """Loads a GSM8K split (7,473 train or 1,319 test problems when packaged).

    Args:
        split: ``"train"`` or ``"test"``; with ``path``, any name.
        path: A jsonl file to read instead of the packaged one.

    Returns:
        The valid problems in file order.

    Raises:
        ValueError: If the split is unknown or no valid row was found.
    """
    return list(load_gsm8k_with_stats(split, path).problems)

