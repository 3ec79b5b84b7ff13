"""Tests for the safe calculator and the claim checker (tool critic)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qstar_jax.tasks.calculator import (
    DEFAULT_LIMITS,
    CalculatorError,
    CalculatorLimits,
    check_annotation,
    check_step,
    evaluate,
)
from qstar_jax.tasks.gsm8k import load_gsm8k

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- Plain evaluation --------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("48/2", 24),
    ("0.1+0.2", Fraction(3, 10)),
    ("10/3", Fraction(10, 3)),
    ("2 * (3 + 4)", 14),
    ("-3 - -4", 1),
    ("+5", 5),
    ("7 // 2", 3),
    ("-7 // 2", -4),
    ("7 % 3", 1),
    ("7%3", 1),
    ("-7 % 3", 2),
    ("2 ** 10", 1024),
    ("2 ** -2", Fraction(1, 4)),
    ("(1/2) ** 3", Fraction(1, 8)),
    ("2 ** 3 ** 2", 512),
    ("2^10", 1024),
    ("$1,200 x 3 ÷ 4", 900),
    ("12 x 2", 24),
    ("2x3", 6),
    ("0x10", 0),  # Documented: "x" between operands is multiplication.
    ("3 × 4", 12),
    ("5 \u2212 8", -3),
    ("1,234,567 + 1", 1234568),
    ("50%", Fraction(1, 2)),
    ("20% * 50", 10),
    ("(12.5%)", Fraction(1, 8)),
    (".5 + 5.", Fraction(11, 2)),
    ("144.00*5", 720),
    ("+30+46+38+11+18", 143),
    ("  ( ( 1 ) )  ", 1),
    ("10**30", 10**30),
])
def test_evaluate_values(expr: str, expected: int | Fraction) -> None:
    result = evaluate(expr)
    assert isinstance(result, Fraction)
    assert result == expected


def test_decimal_literals_are_exact() -> None:
    assert evaluate("0.1 * 3") == Fraction(3, 10)
    assert evaluate("0.1000000000000000000001") == Fraction(
        1000000000000000000001, 10**22)
    assert evaluate("1/3 * 3") == 1


@pytest.mark.parametrize("expr, kind, message", [
    ("__import__('os')", "unsupported", "function call"),
    ("().__class__", "unsupported", "attribute"),
    ("a.b", "unsupported", "attribute"),
    ("f(1)", "unsupported", "function call"),
    ("x", "unsupported", "name 'x'"),
    ("abc + 1", "unsupported", "name 'abc'"),
    ("[1][0]", "unsupported", "subscript"),
    ("1 < 2", "unsupported", "comparison"),
    ("1 and 2", "unsupported", "boolean"),
    ("'a' * 3", "unsupported", "string"),
    ("b'a'", "unsupported", "string"),
    ("lambda: 1", "unsupported", "lambda"),
    ("f'{1}'", "unsupported", "f-string"),
    ("True + 1", "unsupported", "True"),
    ("None", "unsupported", "None"),
    ("...", "unsupported", "Ellipsis"),
    ("1j", "unsupported", "complex"),
    ("1e3", "unsupported", "literal"),
    ("1_000", "unsupported", "literal"),
    ("0b101", "unsupported", "literal"),
    ("0o17", "unsupported", "literal"),
    ("1 if 1 else 2", "unsupported", "conditional"),
    ("1,2", "unsupported", "tuple"),
    ("[1, 2]", "unsupported", "List"),
    ("{1: 2}", "unsupported", "Dict"),
    ("(y := 3)", "unsupported", "NamedExpr"),
    ("~1", "unsupported", "Invert"),
    ("not 1", "unsupported", "Not"),
    ("1 << 2", "unsupported", "LShift"),
    ("1 & 2", "unsupported", "BitAnd"),
    ("1 | 2", "unsupported", "BitOr"),
    ("2 @ 3", "unsupported", "MatMult"),
    ("9**9**9", "exponent", "exponent too large"),
    ("10**100000", "exponent", "exponent too large"),
    ("2 ** 0.5", "exponent", "non-integer"),
    ("4 ** (1/2)", "exponent", "non-integer"),
    ("2 ** 65", "exponent", "exponent too large"),
    ("1/0", "zero_division", "division by zero"),
    ("1 // (2 - 2)", "zero_division", "division by zero"),
    ("5 % 0", "zero_division", "division by zero"),
    ("0 ** -1", "zero_division", "division by zero"),
    ("10**30 + 1", "limit", "out of range"),
    ("1" * 40, "limit", "too large"),
    ("2 ** 64 * 2 ** 64", "limit", "out of range"),
    ("(3 ** -64) ** 64", "limit", "too large"),
    ("(1/3) ** 64 / 3 ** 64", "limit", "out of range"),
    ("1 + " * 60 + "1", "limit", "too long"),
    ("-" * 150 + "1", "limit", "too big"),
    ("", "syntax", "empty"),
    ("   ", "syntax", "empty"),
    ("1 +", "syntax", "not valid"),
    ("007", "syntax", "not valid"),
    ("٣ + 1", "syntax", "not valid"),
    ("１ + 1", "syntax", "not valid"),
    ("1\x00", "syntax", "not valid"),
    ("import os", "syntax", "not valid"),
    ("1; 2", "syntax", "not valid"),
    ("1 # __import__('os')", "unsupported", "comment"),
])
def test_evaluate_rejects(expr: str, kind: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=message) as info:
        evaluate(expr)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


def test_non_string_input_is_a_calculator_error() -> None:
    with pytest.raises(CalculatorError):
        evaluate(12)  # type: ignore[arg-type]


def test_depth_and_node_limits() -> None:
    assert evaluate("(" * 95 + "1" + ")" * 95) == 1  # Parentheses add no depth.
    assert evaluate("+".join(["1"] * 100)) == 100  # Depth 100, 199 nodes.
    small = CalculatorLimits(max_depth=3, max_nodes=5)
    assert evaluate("1 + 2 + 3", limits=small) == 6  # 5 nodes, depth 3.
    with pytest.raises(CalculatorError, match="too big"):
        evaluate("-(-(-1))", limits=small)  # 4 nodes, depth 4.
    with pytest.raises(CalculatorError, match="too big"):
        evaluate("(1 + 2) * (3 + 4)", limits=small)  # 7 nodes, depth 3.


def test_limits_are_configurable() -> None:
    assert dataclasses.replace(DEFAULT_LIMITS, max_exponent=100).max_exponent == 100
    with pytest.raises(CalculatorError, match="too long"):
        evaluate("1 + 1", limits=CalculatorLimits(max_chars=4))
    assert evaluate("2 ** 100", limits=CalculatorLimits(
        max_exponent=100, max_abs=2**100)) == 2**100


@pytest.mark.parametrize("expr, kind, message", [
    ("9**9**9", "exponent", "exponent too large"),
    ("10**100000", "exponent", "exponent too large"),
    ("(" * 100 + "1" + ")" * 100, "limit", "expression too long"),
    ("-" * 199 + "1", "limit", "expression too big"),
    ("9" * 200, "limit", "number too large"),
    ("2**64**64", "limit", "power too large"),
    ("((2**64)**64)**64", "limit", "power too large"),
    ("(2**64)**64", "limit", "power too large"),
    ("1" + "*1" * 98 + "/0", "zero_division", "division by zero"),
])
def test_hostile_inputs_stop_at_a_bound(expr: str, kind: str, message: str) -> None:
    """Each is refused by the bound its message names, a bound that is
    checked before the work it limits (see the next test), so the work is
    bounded by the limits rather than by how fast the machine is."""
    with pytest.raises(CalculatorError, match=message) as info:
        evaluate(expr)
    assert info.value.kind == kind


@pytest.mark.parametrize("expr, limits, message", [
    # Each bound on its own, on an input that stays cheap without it: a
    # check done too late would give another error or a value, not a hang.
    ("2**65", DEFAULT_LIMITS, "exponent too large"),  # 2**65 < 10**30.
    ("3**300", CalculatorLimits(max_exponent=1000), "power too large"),
    ("9" * 32, DEFAULT_LIMITS, "number too large"),
    ("1" + "+1" * 150, CalculatorLimits(max_chars=1000), "expression too big"),
    ("-" * 120 + "1", CalculatorLimits(max_nodes=1000), "expression too big"),
    ("1+" * 150 + "1", DEFAULT_LIMITS, "expression too long"),
])
def test_each_bound_is_checked_before_its_work(expr: str, limits: CalculatorLimits,
                                               message: str) -> None:
    """The exponent and the power's bit size before the power is computed,
    a literal's digits before it is converted, the tree's size and depth
    before it is walked, the text's length before it is parsed."""
    with pytest.raises(CalculatorError, match=message):
        evaluate(expr, limits=limits)


# --- Property tests: random arithmetic against an independent evaluator ------

class _RefError(Exception):
    """The reference evaluator's 'this must be a CalculatorError'."""


def _ref_bound(value: Fraction) -> Fraction:
    limits = DEFAULT_LIMITS
    if (abs(value) > limits.max_abs or value.numerator.bit_length() > limits.max_bits
            or value.denominator.bit_length() > limits.max_bits):
        raise _RefError("bound")
    return value


def _ref_eval(tree: tuple) -> Fraction:
    """Evaluates a generated tree with Fraction, independently of the parser."""
    kind = tree[0]
    if kind == "lit":
        return _ref_bound(tree[2])
    if kind == "neg":
        return -_ref_eval(tree[1])
    if kind == "pos":
        return _ref_eval(tree[1])
    op, left, right = tree[1], _ref_eval(tree[2]), _ref_eval(tree[3])
    if op in ("/", "//", "%") and right == 0:
        raise _RefError("zero")
    if op == "**":
        if right.denominator != 1 or abs(right) > DEFAULT_LIMITS.max_exponent:
            raise _RefError("exponent")
        if left == 0 and right < 0:
            raise _RefError("zero")
        return _ref_bound(left ** int(right))
    results = {"+": lambda: left + right, "-": lambda: left - right,
               "*": lambda: left * right, "/": lambda: left / right,
               "//": lambda: Fraction(left // right), "%": lambda: left % right}
    return _ref_bound(results[op]())


@st.composite
def _literal(draw: st.DrawFn) -> tuple:
    whole = draw(st.integers(0, 10**7))
    decimals = draw(st.sampled_from(["", "", "", ".5", ".25", ".125", ".0", ".75", "."]))
    text = f"{whole:,}" if whole >= 1000 and draw(st.booleans()) else str(whole)
    if decimals and not (decimals == "." and "," in text):
        text += decimals
    value = Fraction(text.replace(",", "").rstrip(".") or "0")
    if whole == 0 and decimals not in ("", ".") and draw(st.booleans()):
        text = decimals  # ".5"
    if draw(st.integers(0, 9)) == 0:
        text = "$" + text
    return ("lit", text, value)


_SYMBOLS = {"+": ["+"], "-": ["-", "\u2212"], "*": ["*", "x", "×"], "/": ["/", "÷"],
            "//": ["//"], "%": ["%"], "**": ["**", "^"]}


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(list(_SYMBOLS)), children, children),
        st.tuples(st.sampled_from(["neg", "pos"]), children),
        # Small exponents keep many powers within bounds.
        st.tuples(st.just("bin"), st.just("**"), children,
                  st.builds(lambda n: ("lit", str(n), Fraction(n)), st.integers(0, 4))),
    )


_TREES = st.recursive(_literal(), _extend, max_leaves=10)


def _render(tree: tuple, draw: st.DrawFn) -> str:
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind in ("neg", "pos"):
        return ("-" if kind == "neg" else "+") + _wrap(tree[1], draw)
    symbol = draw(st.sampled_from(_SYMBOLS[tree[1]]))
    space = " " if symbol in ("%", "x") else draw(st.sampled_from(["", " ", "  "]))
    return f"{_wrap(tree[2], draw)}{space}{symbol}{space}{_wrap(tree[3], draw)}"


def _wrap(tree: tuple, draw: st.DrawFn) -> str:
    return _render(tree, draw) if tree[0] == "lit" else f"({_render(tree, draw)})"


@settings(_FAST, max_examples=1200)
@given(tree=_TREES, data=st.data())
def test_random_arithmetic_matches_reference(tree: tuple, data: st.DataObject) -> None:
    text = _render(tree, data.draw)
    try:
        expected = _ref_eval(tree)
    except _RefError:
        expected = None
    if expected is None or len(text) > DEFAULT_LIMITS.max_chars:
        with pytest.raises(CalculatorError):
            evaluate(text)
    else:
        assert evaluate(text) == expected, text


_HOSTILE = st.sampled_from([
    "__import__('os')", "().__class__", "().__class__.__bases__[0]", "a.b", "f(1)",
    "9**9**9", "10**100000", "1e308", "1e-308", "lambda: 0", "[x for x in ()]",
    "open('/etc/passwd')", "'%s' % 1", "1 if True else 0", "(1).real", "{}",
    "\\", "\"", "'''", "#", "(", ")", "**", "//", "%", "$", ",", "x", "×", "÷",
    "9" * 50, "(" * 150, ")" * 150, "-" * 150, "\u202e1+1", "\ufeff1",
])


@settings(_FAST, max_examples=700)
@given(text=st.one_of(
    st.text(max_size=60),
    st.text(alphabet="0123456789+-*/%().,$ xX×÷^eEjJ_abc'\"[]{}<>=!~&|@#", max_size=60),
    st.lists(_HOSTILE, min_size=1, max_size=4).map(" ".join),
    st.tuples(_HOSTILE, st.text(alphabet="0123456789+-*/() ", max_size=20)).map("".join),
))
def test_only_calculator_errors_escape(text: str) -> None:
    try:
        result = evaluate(text)
    except CalculatorError as err:
        assert err.kind in ("syntax", "unsupported", "limit", "zero_division", "exponent")
        assert str(err)
    else:
        assert isinstance(result, Fraction)
        assert abs(result) <= DEFAULT_LIMITS.max_abs


# --- Claims ------------------------------------------------------------------

def test_check_annotation_on_a_gold_step() -> None:
    checks = check_annotation(
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute and <<0.2*50=10>>10.")
    assert [(c.expression, c.claimed, c.computed, c.ok) for c in checks] == [
        ("12/60", "0.2", Fraction(1, 5), True), ("0.2*50", "10", 10, True)]
    assert all(c.source == "annotation" and c.error is None for c in checks)


@pytest.mark.parametrize("annotation, ok, error", [
    ("<<48/2=24>>", True, None),
    ("<<48/2=25>>", False, None),
    ("<<144*5=720.00>>", True, None),
    ("<<1200*3=3,600>>", True, None),
    ("<<3/4=3/4>>", True, None),
    ("<<-5+2=-3>>", True, None),
    ("<<10/3=3.33>>", True, None),  # |10/3 - 3.33| <= 0.005
    ("<<10/3=3.3>>", True, None),
    ("<<20/3=6.67>>", True, None),
    ("<<20/3=6.66>>", False, None),  # Truncation is not rounding.
    ("<<7/2=3>>", False, None),  # Integer claims are exact.
    ("<<7/2=4>>", False, None),
    ("<<1/8=0.13>>", True, None),
    ("<<1/8=0.12>>", True, None),
    ("<<1/8=0.1>>", True, None),
    ("<<1/8=0.2>>", False, None),
    ("<<5/0=1>>", False, "division by zero"),
    ("<<2S*3=6S>>", False, "not valid"),
    ("<<abc=1>>", False, "name"),
    ("<<3*4=twelve>>", False, "not a number"),
    ("<<3*4=12%>>", False, "not a number"),
    ("<<3*4>>", False, "no '='"),
    ("<<1=1=1>>", False, "not valid"),  # Splits at the last "=": "1=1" is no expression.
])
def test_check_annotation_verdicts(annotation: str, ok: bool, error: str | None) -> None:
    (check,) = check_annotation(f"So {annotation} done.")
    assert check.ok is ok
    if error is None:
        assert check.error is None
    else:
        assert error in check.error


def test_all_gold_annotations_check_out() -> None:
    annotations = [a for split in ("train", "test") for p in load_gsm8k(split)
                   for a in p.annotations]
    assert len(annotations) == 27998
    wrong = [a for a in annotations if not check_annotation(f"<<{a}>>")[0].ok]
    assert wrong == []


@pytest.mark.parametrize("text, n_checked, n_wrong", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", 1, 0),  # Deduplicated.
    ("so S + 143 = 200 - 16 = 184.", 1, 0),
    ("3 + 4 = 8", 1, 1),
    ("10/3 = 3.33 and 2 * 3 = 6, then 6 - 10 = -4.", 3, 0),
    ("He makes 5 * $144 = $720.00 in 5 days", 1, 0),
    ("12 x 2 = 24 pages", 1, 0),
    ("5/0 = 2", 1, 1),
    ("2 * 2S = <<2*2=4>>4S people", 1, 0),
    ("x + 3 = 5 and 2S + 4S = 6S", 0, 0),
    ("60 students x 2/3 = 40 students", 0, 0),
    ("the sun sets at 6:00+48=6:48 PM", 0, 0),
    ("1/5 = 20% of them", 0, 0),
    ("20% * 50 = 10", 0, 0),
    ("10/20*100 = 50% of the class", 0, 0),  # Percent claims are skipped.
    ("The answer is 42.", 0, 0),
    ("Step 2: 7 * 6 = 42", 1, 0),
    ("7 * 6 = 43 and <<7*6=42>>", 2, 1),
    ("2 ** 0.5 = 1.41", 0, 0),  # Not computable exactly: skipped, not wrong.
    ("", 0, 0),
])
def test_check_step(text: str, n_checked: int, n_wrong: int) -> None:
    result = check_step(text)
    assert (result.n_checked, result.n_wrong) == (n_checked, n_wrong), result.details
    assert result.ok is (n_wrong == 0)
    assert len(result.details) == n_checked


_STEP_ALPHABET = "0123456789+-*/=<>x ()$.,%SabZ\n"


@settings(_FAST, max_examples=400)
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet=_STEP_ALPHABET, max_size=80)))
def test_claim_checkers_never_raise(text: str) -> None:
    result = check_step(text)
    assert 0 <= result.n_wrong <= result.n_checked == len(result.details)
    assert result.ok is (result.n_wrong == 0)
    assert all(c.source == "annotation" for c in check_annotation(text))


@settings(_FAST, max_examples=300)
@given(num=st.integers(-10**6, 10**6), den=st.integers(1, 999), decimals=st.integers(1, 4))
def test_rounded_claims(num: int, den: int, decimals: int) -> None:
    rounded = round(Fraction(num, den), decimals)
    expression = f"{num}/{den}" if num >= 0 else f"({num})/{den}"
    assert check_annotation(f"<<{expression}={_fixed(rounded, decimals)}>>")[0].ok
    off = rounded + Fraction(2, 10**decimals)
    assert not check_annotation(f"<<{expression}={_fixed(off, decimals)}>>")[0].ok


def _fixed(value: Fraction, decimals: int) -> str:
    """Writes a value that has at most ``decimals`` decimals, exactly."""
    scaled = value * 10**decimals
    assert scaled.denominator == 1
    digits = str(abs(scaled.numerator)).rjust(decimals + 1, "0")
    return ("-" if value < 0 else "") + digits[:-decimals] + "." + digits[-decimals:]
