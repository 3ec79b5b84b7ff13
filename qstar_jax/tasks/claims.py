"""Claim checking, the tool critic: ``<<expression=result>>`` annotations and ``a + b = c``.

Expressions are evaluated by :func:`qstar_jax.tasks.calculator.evaluate`.
Claims (:func:`check_annotation`, :func:`check_step`) are correct when the
computed value equals the claim exactly, or when the claim has ``d >= 1``
decimals and ``|computed - claimed| <= 0.5 * 10**-d`` (``10/3 = 3.33`` is ok,
``20/3 = 6.66`` is not). Integer and fraction claims must be exact.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Final, NamedTuple

from qstar_jax.tasks.calculator import CalculatorError, evaluate

__all__ = [
    "ClaimCheck",
    "StepCheck",
    "check_annotation",
    "check_step",
]

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_CLAIM_NUMBER = re.compile(
    r"([-+]?)(?:(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?|\.(\d+)|(\d+)/(\d+))", re.ASCII)
_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<word>\w*[^\W\d]\w*)"
    r"|(?P<num>\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\$?\.\d+)"
    r"|(?P<op>\*\*|//|[-+*/×÷^−])|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<other>.)",
    re.ASCII | re.DOTALL)
_ARITHMETIC: Final = frozenset({"num", "op", "lp", "rp", "eq"})
_LEAD_OK: Final = frozenset({":", ";", ",", "["})  # May precede a leading sign.
_TAIL_OK: Final = frozenset({".", ",", ";", "!", "?", "'", '"'})  # May follow a claim.
_OPERATOR_WORDS: Final = frozenset({"x", "X", "times", "of", "by", "–", "—"})


@dataclasses.dataclass(frozen=True)
class ClaimCheck:
    """The verdict on one arithmetic claim.

    Attributes:
        source: ``"annotation"`` (``<<expression=result>>``) or ``"text"``.
        expression: The expression as written (left of the ``=``).
        claimed: The claimed result as written (right of the ``=``).
        computed: Exact value of ``expression``, or None if not computable.
        ok: True iff the claim was verified correct.
        error: Why the claim could not be verified, else None.
    """

    source: str
    expression: str
    claimed: str
    computed: Fraction | None
    ok: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class StepCheck:
    """The verdict on all claims of one reasoning step.

    Attributes:
        n_checked: Number of claims found (annotations and plain claims).
        n_wrong: Number of claims not verified correct.
        ok: True iff ``n_wrong == 0`` (a step without claims is ok).
        details: One :class:`ClaimCheck` per claim, annotations first.
    """

    n_checked: int
    n_wrong: int
    ok: bool
    details: tuple[ClaimCheck, ...]


def _parse_claimed(text: str) -> tuple[Fraction, int] | None:
    """Parses ``"$1,234.50"``, ``"-3.33"`` or ``"3/4"`` to ``(value, decimals)``."""
    cleaned = text.strip().replace("\u2212", "-").replace("$", "")
    match = _CLAIM_NUMBER.fullmatch(cleaned) if len(cleaned) <= 64 else None
    if match is None:
        return None
    sign, whole, frac, bare, num, den = match.groups()
    if num is not None:
        return None if int(den) == 0 else (Fraction(f"{sign}{num}/{den}"), 0)
    digits = frac if whole is not None else bare
    value = Fraction(f"{sign}{(whole or '0').replace(',', '')}.{digits or '0'}")
    return value, len(digits or "")


def _claim_matches(computed: Fraction, claimed: Fraction, decimals: int) -> bool:
    """Exact match, or within ``0.5 * 10**-decimals`` when ``decimals >= 1``."""
    if computed == claimed:
        return True
    return decimals >= 1 and abs(computed - claimed) <= Fraction(1, 2 * 10**decimals)


def _check_claim(source: str, expression: str, claimed: str) -> tuple[ClaimCheck, str]:
    """Returns the verdict and the kind of evaluation error ("" if none)."""
    try:
        computed = evaluate(expression)
    except CalculatorError as err:
        return ClaimCheck(source, expression, claimed, None, False, str(err)), err.kind
    parsed = _parse_claimed(claimed)
    if parsed is None:
        return ClaimCheck(source, expression, claimed, computed, False,
                          f"claimed value is not a number: {claimed!r:.40}"), ""
    ok = _claim_matches(computed, *parsed)
    return ClaimCheck(source, expression, claimed, computed, ok), ""


def check_annotation(text: str) -> list[ClaimCheck]:
    """Checks every ``<<expression=result>>`` calculator annotation in a text.

    The expression is everything before the last ``=`` inside the brackets.
    An annotation that cannot be evaluated (syntax, a bound, division by zero)
    or whose result is not a number is not ok.

    Args:
        text: A reasoning step (or any text).

    Returns:
        One :class:`ClaimCheck` with source ``"annotation"`` per annotation,
        in order of appearance.
    """
    results = []
    for match in _ANNOTATION.finditer(text):
        expression, eq, claimed = match.group(1).rpartition("=")
        if not eq:
            results.append(ClaimCheck("annotation", claimed, "", None, False,
                                      "annotation has no '='"))
        else:
            results.append(_check_claim("annotation", expression, claimed)[0])
    return results


def check_step(text: str) -> StepCheck:
    """Checks the annotations and the plain arithmetic claims of a step.

    Plain claims are searched after removing annotations: maximal runs of
    numbers, operators, parentheses and ``=`` are split at each ``=``, and a
    pair ``lhs = rhs`` is a claim when ``lhs`` holds at least two numbers and
    ``rhs`` is one number, optionally signed. This is a heuristic: runs cut
    off by words (``S + 143 = 184``, ``60 students x 2/3 = 40``), glued to
    other text (``6:00+48=6:48``) or ending in ``%`` are skipped, and so are
    expressions the calculator rejects for any reason but division by zero.
    A plain claim with the same computed and claimed values as an annotation
    of the step is not counted twice.

    Args:
        text: A reasoning step, e.g. ``"48/2 = <<48/2=24>>24 clips"``.

    Returns:
        A :class:`StepCheck`.
    """
    details = check_annotation(text)
    seen = {(c.computed, _parse_claimed(c.claimed)) for c in details}
    for lhs, rhs in _plain_claims(_ANNOTATION.sub("", text)):
        check, error_kind = _check_claim("text", lhs, rhs)
        if error_kind not in ("", "zero_division"):
            continue
        key = (check.computed, _parse_claimed(rhs))
        if key not in seen:
            seen.add(key)
            details.append(check)
    n_wrong = sum(not c.ok for c in details)
    return StepCheck(len(details), n_wrong, n_wrong == 0, tuple(details))


class _Token(NamedTuple):
    kind: str
    text: str
    glued: bool  # No whitespace between this token and the previous one.


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    glued = False
    for match in _TOKEN.finditer(text):
        kind, tok = match.lastgroup or "other", match.group()
        if kind == "ws":
            glued = False
            continue
        if kind == "word" and glued and tokens and tokens[-1].kind == "num":
            tokens[-1] = tokens[-1]._replace(kind="other")  # "4S", "3rd".
        tokens.append(_Token(kind, tok, glued))
        glued = True
    for i in range(1, len(tokens) - 1):  # "12 x 2": x between operands.
        if (tokens[i].text in ("x", "X") and tokens[i - 1].kind in ("num", "rp")
                and tokens[i + 1].kind in ("num", "lp")):
            tokens[i] = tokens[i]._replace(kind="op", text="*")
    return tokens


def _plain_claims(text: str) -> list[tuple[str, str]]:
    """Finds candidate ``(lhs, rhs)`` claims; see :func:`check_step`."""
    claims = []
    tokens = _tokenize(text)
    end = 0
    while end < len(tokens):
        start = end
        while end < len(tokens) and tokens[end].kind in _ARITHMETIC:
            end += 1
        if start == end:
            end += 1
            continue
        before = tokens[start - 1] if start > 0 else None
        after = tokens[end] if end < len(tokens) else None
        cut_left = before is not None and (
            tokens[start].glued or before.text in _OPERATOR_WORDS
            or (tokens[start].kind == "op" and before.text not in _LEAD_OK))
        cut_right = after is not None and after.glued and after.text not in _TAIL_OK
        segments: list[list[_Token]] = [[]]
        for tok in tokens[start:end]:
            if tok.kind == "eq":
                segments.append([])
            else:
                segments[-1].append(tok)
        for j, (lhs, rhs) in enumerate(zip(segments, segments[1:])):
            if (j == 0 and cut_left) or (j == len(segments) - 2 and cut_right):
                continue
            signed = len(rhs) == 2 and rhs[0].text in ("-", "−", "+")
            if (sum(t.kind == "num" for t in lhs) >= 2 and rhs and rhs[-1].kind == "num"
                    and (len(rhs) == 1 or signed)):
                claims.append((" ".join(t.text for t in lhs),
                               "".join(t.text for t in rhs)))
    return claims
