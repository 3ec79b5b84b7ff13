"""Final-answer extraction and grading for GSM8K-style math problems.

Rules (each one is tested in ``tests/test_grading.py``):

* Extraction modes: ``"hash"`` reads the text after the **last** ``####``
  (the GSM8K convention; a model that writes ``#### 18`` then ``#### 19`` has
  corrected itself, so 19 wins). ``"the_answer_is"`` reads the text after the
  last "the answer is", "the final answer is", "answer is" or "answer:"
  (case-insensitive). ``"last_number"`` takes the last number-like token
  that is not glued to a word or digit (``1e3``, ``4S``, ``1/2/2020`` and
  ``1,2`` give none).
  ``"auto"`` tries them in that order. A marker that is present decides, even
  when what follows it is not a number: ``#### abc`` is graded "not a number",
  never replaced by some earlier number from the reasoning.
* The answer is read from the rest of the marker's line (or the next
  non-empty line if the marker ends its line): the whole rest if it is a
  number, else its leading number (``#### 18 dollars`` -> ``18``), else the
  rest as written, so that the reason can show it. Markdown ``**`` and
  ``\\boxed{}`` around the answer are ignored. Caveat: a markdown heading such
  as ``#### Step 1`` is a ``####`` marker too; use ``mode="the_answer_is"``
  for outputs that use such headings.
* Numbers (:func:`normalize_number`): ASCII digits only (``٣`` is not a
  number); optional sign (``-`` or U+2212) and ``$``; thousands separators
  only with valid groupings (``1,234,567``; ``1,2`` is not a number); trailing
  ``%`` is dropped and the value kept (``50%`` -> 50, because GSM8K answers to
  "what percent" questions are written as plain numbers); trailing ``.0`` etc.
  are harmless since values are exact; a trailing period is dropped; simple
  fractions ``3/4`` and proper mixed numbers ``1 1/2`` are accepted, so
  ``3/4`` equals ``0.75``. Scientific notation (``1e3``) and strings over 64
  characters are not numbers.
* Comparison is exact with ``Fraction``.
* Length: a text over :data:`MAX_TEXT_CHARS` characters is not read
  (``extract_answer`` returns None, ``grade`` answers ``"too long"``), so the
  work of grading any input is bounded; model outputs here are a few hundred
  tokens, far below it.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Final

MODES: Final = ("auto", "hash", "the_answer_is", "last_number")
_MAX_NUMBER_CHARS: Final = 64
MAX_TEXT_CHARS: Final = 100_000

_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(
    rf"(?P<sign>[-+]?)(?:(?P<mixed>\d+)\s+(?P<mnum>\d+)/(?P<mden>\d+)"
    rf"|(?P<num>\d+)/(?P<den>\d+)|(?P<dec>{_DECIMAL}))", re.ASCII)
# A number-looking token in running text, not glued to words or other digits
# (possessive and atomic groups keep the scan linear on hostile input).
_TOKEN_BODY: Final = (r"[-−]?\$?(?>(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d++)(?:\.\d+)?"
                      r"|\.\d+)(?:/\d++)?%?(?![\w/]|[.,]\d)")
_TOKEN = re.compile(r"(?<![\w.,/])" + _TOKEN_BODY, re.ASCII)
_LEADING = re.compile(
    r"\$?\s*([-−]?\d+\s+\d+/\d+(?![\w/]|[.,]\d)|" + _TOKEN_BODY + ")", re.ASCII)
_HASH = re.compile(r"####")
_ANSWER_IS = re.compile(r"\banswer(?:\s+is\b[ \t]*:?|[ \t]*:)", re.IGNORECASE)
_SPACE = re.compile(r"\s*")
_DECORATION: Final = " \t#*:={}`"


@dataclasses.dataclass(frozen=True)
class Grade:
    """The verdict on one model answer.

    Attributes:
        correct: Whether the extracted answer equals the gold answer.
        reward: 1.0 if correct else 0.0.
        predicted: The extracted answer text, or None if none was found.
        reason: ``"match"``, ``"no answer found"``, ``"empty answer"`` (a
            marker with nothing after it), ``"not a number: '...'"``,
            ``"mismatch: <predicted> != <gold>"`` or ``"too long: <n> >
            <MAX_TEXT_CHARS> characters"``.
    """

    correct: bool
    reward: float
    predicted: str | None
    reason: str


def normalize_number(s: str) -> Fraction | None:
    """Parses a written answer into an exact number.

    Args:
        s: Text such as ``"$1,234.00"``, ``"-5"``, ``"50%"``, ``"3/4"`` or
            ``"1 1/2"``; see the module docstring for the rules.

    Returns:
        The exact value, or None if ``s`` is not a number.
    """
    if not isinstance(s, str):
        return None
    text = s.strip().replace("\u2212", "-")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    text = text.removesuffix("%").rstrip()
    if text[:1] == "$":
        text = text[1:]
    elif text[:2] in ("-$", "+$"):
        text = text[0] + text[2:]
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    sign = -1 if match["sign"] == "-" else 1
    if match["dec"] is not None:
        return sign * Fraction(match["dec"].replace(",", ""))
    if match["num"] is not None:
        den = int(match["den"])
        return None if den == 0 else sign * Fraction(int(match["num"]), den)
    whole, num, den = int(match["mixed"]), int(match["mnum"]), int(match["mden"])
    if not 0 < num < den:  # "3 4/2" or "1 0/5" are not unambiguous mixed numbers.
        return None
    return sign * (whole + Fraction(num, den))


def _after_marker(rest: str) -> str:
    """Picks the answer out of the text that follows a marker."""
    rest = rest.replace("\\boxed", "").strip(_DECORATION)
    if normalize_number(rest) is not None:
        return rest.strip()
    match = _LEADING.match(rest)
    return match.group(1) if match else rest.strip()


def extract_answer(text: str, *, mode: str = "auto") -> str | None:
    """Extracts the final answer text from a model output.

    Args:
        text: The model output (a full solution).
        mode: ``"hash"``, ``"the_answer_is"``, ``"last_number"`` or
            ``"auto"``; see the module docstring.

    Returns:
        The answer as written (not normalized), or None if none was found
        or the text is longer than :data:`MAX_TEXT_CHARS`.

    Raises:
        ValueError: If ``mode`` is unknown.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return None
    order = ("hash", "the_answer_is", "last_number") if mode == "auto" else (mode,)
    for step in order:
        if step == "last_number":
            match = _last_match(_TOKEN, text)
            if match is not None:
                return match.group()
        else:
            match = _last_match(_HASH if step == "hash" else _ANSWER_IS, text)
            if match is not None:
                start = _SPACE.match(text, match.end()).end()  # May skip a newline.
                end = text.find("\n", start)
                return _after_marker(text[start:end if end >= 0 else None])
    return None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value} ({float(value):g})"


def grade(model_text: str, gold_answer: str, *, mode: str = "auto") -> Grade:
    """Grades a model output against a gold answer.

    Args:
        model_text: The model output; anything that is not a string, has no
            answer, has a non-numeric answer or is longer than
            :data:`MAX_TEXT_CHARS` grades as incorrect.
        gold_answer: The gold short answer, e.g. GSM8K's ``"1,080"``.
        mode: Extraction mode for :func:`extract_answer`.

    Returns:
        A :class:`Grade`; the function never raises on model output.

    Raises:
        ValueError: If ``gold_answer`` is not a number or ``mode`` is unknown.
    """
    gold = normalize_number(gold_answer)
    if gold is None:
        raise ValueError(f"gold answer is not a number: {gold_answer!r}")
    predicted = extract_answer(model_text, mode=mode)
    if predicted is None:
        if isinstance(model_text, str) and len(model_text) > MAX_TEXT_CHARS:
            return Grade(False, 0.0, None, f"too long: {len(model_text)} > "
                         f"{MAX_TEXT_CHARS} characters")
        return Grade(False, 0.0, None, "no answer found")
    value = normalize_number(predicted)
    if value is None:
        reason = f"not a number: {predicted[:40]!r}" if predicted else "empty answer"
        return Grade(False, 0.0, predicted, reason)
    if value != gold:
        return Grade(False, 0.0, predicted, f"mismatch: {_show(value)} != {_show(gold)}")
    return Grade(True, 1.0, predicted, "match")
