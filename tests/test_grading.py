"""Tests for answer extraction, number normalization and grading."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qstar_jax.tasks.grading import (MAX_TEXT_CHARS, Grade, extract_answer, grade,
                                     normalize_number)
from qstar_jax.tasks.gsm8k import Gsm8kProblem, load_gsm8k


@pytest.fixture(scope="module")
def all_problems() -> list[Gsm8kProblem]:
    return load_gsm8k("train") + load_gsm8k("test")


def test_every_gold_solution_grades_correct(all_problems: list[Gsm8kProblem]) -> None:
    assert len(all_problems) == 8792
    failures = [(p.uid, g.reason) for p in all_problems
                if not (g := grade(p.answer, p.short_answer)).correct]
    assert failures == []


def test_every_gold_solution_grades_correct_in_hash_mode(
        all_problems: list[Gsm8kProblem]) -> None:
    assert all(grade(p.answer, p.short_answer, mode="hash").reward == 1.0
               for p in all_problems)


def test_every_gold_short_answer_is_a_number(all_problems: list[Gsm8kProblem]) -> None:
    values = [normalize_number(p.short_answer) for p in all_problems]
    assert None not in values
    assert all(v.denominator == 1 for v in values)  # GSM8K answers are integers.
    with_commas = [p.short_answer for p in all_problems if "," in p.short_answer]
    assert len(with_commas) == 93
    assert normalize_number("1,080") == 1080


def test_gold_solution_with_the_wrong_answer_grades_incorrect(
        all_problems: list[Gsm8kProblem]) -> None:
    problem = all_problems[0]
    wrong = str(normalize_number(problem.short_answer) + 1)
    result = grade(problem.answer, wrong)
    assert not result.correct and result.reward == 0.0
    assert result.reason.startswith("mismatch: ")


# (model text, gold, correct, reason, predicted); reason "" means "match".
_ADVERSARIAL = [
    ("#### 1,234", "1234", True, "", "1,234"),
    ("#### 1234", "1,234", True, "", "1234"),
    ("The answer is $18.00.", "18", True, "", "$18.00."),
    ("the FINAL answer is 18 apples", "18", True, "", "18"),
    ("Final answer: **42**", "42", True, "", "42"),
    ("Final Answer: \\boxed{42}", "42", True, "", "42"),
    ("The answer is:\n\n18", "18", True, "", "18"),
    # The last "####" wins: a model that corrects itself is graded on the fix.
    ("#### 18\n#### 19", "19", True, "", "19"),
    ("#### 18\n#### 19", "18", False, "mismatch: 19 != 18", "19"),
    ("#### 18 #### 19", "19", True, "", "19"),
    ("The answer is 5. No wait, the answer is 6.", "6", True, "", "6."),
    # "####" beats "the answer is", which beats the last number.
    ("The answer is 5.\n#### 6", "6", True, "", "6"),
    ("The answer is 5. Then 2 + 2 = 4", "5", True, "", "5"),
    # A marker decides even when no number follows it.
    ("5 + 3 = 8\n#### abc", "8", False, "not a number: 'abc'", "abc"),
    ("#### abc", "1", False, "not a number: 'abc'", "abc"),
    ("The answer is eighteen.", "18", False, "not a number: 'eighteen.'", "eighteen."),
    ("####", "1", False, "empty answer", ""),
    ("answer: 1,2", "12", False, "not a number: '1,2'", "1,2"),
    ("answer: 1,2", "2", False, "not a number: '1,2'", "1,2"),
    ("-5", "5", False, "mismatch: -5 != 5", "-5"),
    ("#### -5", "-5", True, "", "-5"),
    ("It costs \u22125 dollars", "-5", True, "", "\u22125"),
    ("10-5", "5", True, "", "5"),
    ("50%", "50", True, "", "50%"),
    ("#### 50%", "50", True, "", "50%"),
    ("#### 50%", "0.5", False, "mismatch: 50 != 1/2 (0.5)", "50%"),
    ("3/4", "0.75", True, "", "3/4"),
    ("#### 0.75", "3/4", True, "", "0.75"),
    ("The answer is 1 1/2 cups", "1.5", True, "", "1 1/2"),
    ("#### 18.00", "18", True, "", "18.00"),
    ("#### 18.50", "18", False, "mismatch: 37/2 (18.5) != 18", "18.50"),
    ("#### 18 dollars", "18", True, "", "18"),
    ("#### $1,080", "1080", True, "", "$1,080"),
    ("no number here", "1", False, "no answer found", None),
    ("", "1", False, "no answer found", None),
    # Scientific notation and non-ASCII digits are not numbers.
    ("1e3", "1000", False, "no answer found", None),
    ("#### 1e3", "1000", False, "not a number: '1e3'", "1e3"),
    ("\u0663", "3", False, "no answer found", None),
    ("#### \u0663", "3", False, "not a number: '\u0663'", "\u0663"),
    ("#### \uff11\uff18", "18", False, "not a number: '\uff11\uff18'", "\uff11\uff18"),
    # Last number: tokens glued to words, digits or slashes are not numbers.
    ("He has 4S and 3rd place", "4", False, "no answer found", None),
    ("on 1/2/2020 he paid 7.", "7", True, "", "7"),
    ("So he has 5 + 3 = 8 apples.", "8", True, "", "8"),
    ("x" * 100_000, "1", False, "no answer found", None),
    ("1" * 100_000, "1", False, "not a number: '" + "1" * 40 + "'", "1" * 100_000),
]


@pytest.mark.parametrize("text, gold, correct, reason, predicted", _ADVERSARIAL,
                         ids=[repr(case[0][:30]) for case in _ADVERSARIAL])
def test_adversarial_answers(text: str, gold: str, correct: bool, reason: str,
                             predicted: str | None) -> None:
    result = grade(text, gold)
    assert result == Grade(correct, 1.0 if correct else 0.0, predicted, reason or "match")


@pytest.mark.parametrize("text, mode, expected", [
    ("#### 7\nThe answer is 8. 9", "hash", "7"),
    ("#### 7\nThe answer is 8. 9", "the_answer_is", "8"),
    ("#### 7\nThe answer is 8. 9", "last_number", "9"),
    ("#### 7\nThe answer is 8. 9", "auto", "7"),
    ("The answer is 8", "hash", None),
    ("#### 7", "the_answer_is", None),
    ("no digits", "last_number", None),
    ("a 1,234,567 b", "last_number", "1,234,567"),
    ("$5.50 each", "last_number", "$5.50"),
])
def test_extract_answer_modes(text: str, mode: str, expected: str | None) -> None:
    assert extract_answer(text, mode=mode) == expected


def test_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        extract_answer("#### 1", mode="first_number")


def test_non_numeric_gold_raises() -> None:
    with pytest.raises(ValueError, match="gold answer"):
        grade("#### 1", "one")


def test_non_string_model_output_is_incorrect() -> None:
    assert grade(None, "1") == Grade(False, 0.0, None, "no answer found")  # type: ignore[arg-type]


@pytest.mark.parametrize("text, expected", [
    ("72", Fraction(72)),
    (" 72 ", Fraction(72)),
    ("1,234,567", Fraction(1234567)),
    ("$1,234.00", Fraction(1234)),
    ("-$5", Fraction(-5)),
    ("$-5", Fraction(-5)),
    ("+5", Fraction(5)),
    ("\u22123", Fraction(-3)),
    ("18.", Fraction(18)),
    ("18.0", Fraction(18)),
    ("18.00", Fraction(18)),
    (".5", Fraction(1, 2)),
    ("0.75", Fraction(3, 4)),
    ("50%", Fraction(50)),
    ("50 %", Fraction(50)),
    ("3/4", Fraction(3, 4)),
    ("-3/4", Fraction(-3, 4)),
    ("1 1/2", Fraction(3, 2)),
    ("-1 1/2", Fraction(-3, 2)),
    ("1,2", None),
    ("12,34", None),
    ("1234,567", None),
    (",123", None),
    ("3 4/2", None),  # Improper "mixed number": ambiguous.
    ("1/0", None),
    ("18..", None),
    ("1e3", None),
    ("\u0663", None),
    ("", None),
    ("abc", None),
    ("- 5", None),
    ("5 5", None),
    ("9" * 65, None),
])
def test_normalize_number(text: str, expected: Fraction | None) -> None:
    assert normalize_number(text) == expected


def _at_most(limit: int, unit: str, suffix: str = "") -> str:
    """`unit` repeated, then `suffix`, in at most `limit` characters."""
    return unit * ((limit - len(suffix)) // len(unit)) + suffix


@pytest.mark.parametrize("unit, suffix, reason", [
    ("1", "a", "no answer found"), ("1,", "", "no answer found"),
    ("answer is ", "", "empty answer"), ("#", "", "empty answer"),
    ("-", "", "no answer found"), ("1/", "", "no answer found"),
    ("1 ", "1/2", "mismatch: 1/2 (0.5) != 1"), ("1 ", "1", "match"),
    (".1", "", "no answer found"),
])
def test_hostile_strings_are_bounded_by_the_length_limit(
        unit: str, suffix: str, reason: str) -> None:
    """The work is bounded by refusing texts over MAX_TEXT_CHARS before any
    scan; up to the limit, hostile repetitions get their exact verdicts
    (the answer at the very end of the text is still found)."""
    text = _at_most(MAX_TEXT_CHARS, unit, suffix)
    assert MAX_TEXT_CHARS - len(unit) < len(text) <= MAX_TEXT_CHARS
    assert grade(text, "1").reason == reason
    # Past the limit, even an answer every mode would read is not looked at.
    over = text + "\nThe answer is 1\n#### 1"
    assert grade(over[len(over) - MAX_TEXT_CHARS:], "1").correct
    result = grade(over, "1")
    assert result == Grade(False, 0.0, None, f"too long: {len(over)} > "
                           f"{MAX_TEXT_CHARS} characters")
    for mode in ("hash", "the_answer_is", "last_number", "auto"):
        assert extract_answer(over, mode=mode) is None
    with pytest.raises(ValueError, match="unknown mode"):
        grade(over, "1", mode="bogus")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), gold=st.integers(-10**6, 10**6))
def test_grade_never_raises_on_model_output(text: str, gold: int) -> None:
    result = grade(text, str(gold))
    assert result.reward == (1.0 if result.correct else 0.0)
    assert result.correct == (result.reason == "match")


@settings(max_examples=300, deadline=None)
@given(value=st.integers(-10**9, 10**9), commas=st.booleans(), dollars=st.booleans())
def test_hash_answers_round_trip(value: int, commas: bool, dollars: bool) -> None:
    written = f"{abs(value):,}" if commas else str(abs(value))
    written = ("-" if value < 0 else "") + ("$" if dollars else "") + written
    assert grade(f"Some steps 1 + 1 = 2.\n#### {written}", str(value)).correct
