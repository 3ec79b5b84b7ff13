"""Safe, exact calculator for model-written arithmetic.

Nothing is ever executed: text is parsed with ``ast.parse(expr, mode="eval")``
and the tree is walked against a whitelist: int and decimal literals, binary
``+ - * / // % **`` and unary ``+ -`` (parentheses are implicit in the tree).
Anything else (names, attributes, calls, subscripts, comparisons, strings,
lambdas, f-strings, booleans, complex, scientific, hex or ``1_000`` literals)
raises :class:`CalculatorError`. Arithmetic is exact with ``Fraction``;
decimal literals are converted from their source text (``0.1 + 0.2 == 3/10``).

GSM8K-style text is normalized first (:func:`normalize_expression`): ``$`` is
dropped; thousands separators with valid groupings are removed (``1,234,567``;
``1,2`` stays and fails as a tuple); ``×``, and ``x``/``X`` between two
operands (``12 x 2``, ``2x3``; so ``0x10`` is ``0 * 10``), multiply; ``÷``
divides; U+2212 is a minus; ``^`` is power. A ``%`` right after a number and
not followed by an operand is a percent sign (``50%`` is ``1/2``,
``20% * 50`` is ``10``); any other ``%`` is Python modulo (``7 % 3``, ``7%3``).

Bounds (:class:`CalculatorLimits`): 200 characters, tree depth 100, 200
nodes, integer exponents with ``|exponent| <= 64``, and every literal and
intermediate value within ``|value| <= 10**30`` with at most 256-bit numerator
and denominator. Division or modulo by zero is an error.

The claim checkers built on the calculator (the tool critic:
:func:`check_annotation`, :func:`check_step`, :class:`ClaimCheck`,
:class:`StepCheck`) live in :mod:`qstar_jax.tasks.claims` and are re-exported
here.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import re
from fractions import Fraction
from typing import Final


class CalculatorError(ValueError):
    """Raised when an expression is not safe, bounded, exact arithmetic.

    Attributes:
        kind: ``"syntax"`` (does not parse), ``"unsupported"`` (outside the
            whitelist), ``"limit"`` (a bound), ``"zero_division"`` or
            ``"exponent"`` (a non-integer or too large exponent).
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class CalculatorLimits:
    """Resource bounds for :func:`evaluate`.

    Attributes:
        max_chars: Maximum length of the raw expression string.
        max_depth: Maximum depth of the expression tree (a literal is depth 1).
        max_nodes: Maximum number of expression nodes (literals and operators).
        max_exponent: Maximum absolute value of an (integer) exponent.
        max_abs: Maximum absolute value of any literal or intermediate result.
        max_bits: Maximum bit length of any numerator or denominator.
    """

    max_chars: int = 200
    max_depth: int = 100
    max_nodes: int = 200
    max_exponent: int = 64
    max_abs: int = 10**30
    max_bits: int = 256


DEFAULT_LIMITS: Final = CalculatorLimits()

_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])", re.ASCII)
_TIMES_X = re.compile(r"(?<=[\d).])[ \t]*[xX][ \t]*(?=[\d(.])", re.ASCII)
_PERCENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)%(?![ \t]*[\d(.])", re.ASCII)
_LITERAL = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)
_BIN_OPS: Final = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                   ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
                   ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNSUPPORTED: Final = {
    ast.Name: "name", ast.Attribute: "attribute access",
    ast.Call: "function call", ast.Subscript: "subscript",
    ast.Compare: "comparison", ast.BoolOp: "boolean operator",
    ast.Lambda: "lambda", ast.JoinedStr: "f-string",
    ast.IfExp: "conditional expression", ast.Tuple: "tuple (bad comma?)",
}


def normalize_expression(expr: str) -> str:
    """Rewrites GSM8K-style arithmetic into Python arithmetic syntax.

    Args:
        expr: Raw expression text, e.g. ``"$1,200 x 3 ÷ 4"``.

    Returns:
        The rewritten text, e.g. ``"1200*3 / 4"``; not validated.
    """
    text = expr.replace("$", "").replace("\u2212", "-")
    text = text.replace("×", "*").replace("÷", "/").replace("^", "**")
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _TIMES_X.sub("*", text)
    return _PERCENT.sub(r"(\1/100)", text).strip()


def evaluate(expr: str, *, limits: CalculatorLimits = DEFAULT_LIMITS) -> Fraction:
    """Evaluates an arithmetic expression exactly and safely.

    Args:
        expr: Arithmetic text such as ``"48/2"``, ``"$1,200 x 3"`` or
            ``"(3 + 4) ** 2"``; see the module docstring for the syntax.
        limits: Resource bounds.

    Returns:
        The exact value.

    Raises:
        CalculatorError: If the text is not whitelisted arithmetic, breaks a
            bound, or divides by zero. No other exception escapes.
    """
    if not isinstance(expr, str):
        raise CalculatorError(f"expected a string, got {type(expr).__name__}",
                              kind="syntax")
    if len(expr) > limits.max_chars:
        raise CalculatorError(
            f"expression too long: {len(expr)} > {limits.max_chars} characters",
            kind="limit")
    source = normalize_expression(expr)
    if not source:
        raise CalculatorError("empty expression", kind="syntax")
    if "#" in source:
        raise CalculatorError("unsupported syntax: comment ('#')", kind="unsupported")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise CalculatorError(f"not valid arithmetic: {expr!r} "
                              f"({type(err).__name__})", kind="syntax") from None
    _check_shape(tree.body, limits)
    return _Evaluator(source, limits).eval(tree.body)


def _check_shape(root: ast.expr, limits: CalculatorLimits) -> None:
    """Checks the whitelist, node count and depth, without recursion."""
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    n_nodes = 0
    while stack:
        node, depth = stack.pop()
        n_nodes += 1
        if n_nodes > limits.max_nodes or depth > limits.max_depth:
            raise CalculatorError(
                f"expression too big: more than {limits.max_nodes} nodes or "
                f"{limits.max_depth} levels", kind="limit")
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, (ast.BinOp, ast.UnaryOp)):
            raise CalculatorError(f"unsupported operator: {type(node.op).__name__}",
                                  kind="unsupported")
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                what = "string" if isinstance(value, (str, bytes)) else type(value).__name__
                raise CalculatorError(f"unsupported literal: {what} {value!r:.40}",
                                      kind="unsupported")
        else:
            what = _UNSUPPORTED.get(type(node), type(node).__name__)
            name = f" {node.id!r}" if isinstance(node, ast.Name) else ""
            raise CalculatorError(f"unsupported syntax: {what}{name}",
                                  kind="unsupported")


class _Evaluator:
    """Evaluates a tree already accepted by :func:`_check_shape`."""

    def __init__(self, source: str, limits: CalculatorLimits) -> None:
        self._source = source
        self._limits = limits

    def eval(self, node: ast.expr) -> Fraction:
        if isinstance(node, ast.Constant):
            return self._bounded(self._literal(node))
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            return operand if isinstance(node.op, ast.UAdd) else -operand
        assert isinstance(node, ast.BinOp)
        left, right = self.eval(node.left), self.eval(node.right)
        return self._bounded(self._binary(node.op, left, right))

    def _literal(self, node: ast.Constant) -> Fraction:
        text = ast.get_source_segment(self._source, node) or ""
        if not _LITERAL.fullmatch(text):
            raise CalculatorError(
                f"unsupported number literal: {text!r:.40} (only plain decimals: "
                "no exponent, underscore, hex or complex)", kind="unsupported")
        if len(text.partition(".")[0]) > 31:
            raise CalculatorError(f"number too large: {text!r:.40}", kind="limit")
        return Fraction(text)

    def _binary(self, op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
        if isinstance(op, ast.Pow):
            return self._power(left, right)
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero", kind="zero_division")
        return Fraction(_BIN_OPS[type(op)](left, right))

    def _power(self, base: Fraction, exponent: Fraction) -> Fraction:
        if exponent.denominator != 1:
            raise CalculatorError(f"non-integer exponent: {exponent}", kind="exponent")
        exp = exponent.numerator
        if abs(exp) > self._limits.max_exponent:
            raise CalculatorError(
                f"exponent too large: |{exp}| > {self._limits.max_exponent}",
                kind="exponent")
        if base == 0 and exp < 0:
            raise CalculatorError("division by zero (0 to a negative power)",
                                  kind="zero_division")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if (bits - 1) * abs(exp) > self._limits.max_bits:
            raise CalculatorError(f"power too large: ({base}) ** {exp}", kind="limit")
        return base**exp

    def _bounded(self, value: Fraction) -> Fraction:
        limits = self._limits
        if (abs(value) > limits.max_abs
                or value.numerator.bit_length() > limits.max_bits
                or value.denominator.bit_length() > limits.max_bits):
            raise CalculatorError(
                f"value out of range (|value| <= {limits.max_abs:.0e}, "
                f"<= {limits.max_bits} bits)", kind="limit")
        return value


# Re-exported for `from qstar_jax.tasks.calculator import check_step` and the
# like. At the bottom because claims.py imports the evaluator defined above, so
# this module must load before claims.py (qstar_jax/tasks/__init__.py imports
# it first).
from qstar_jax.tasks.claims import (  # noqa: E402
    ClaimCheck,
    StepCheck,
    check_annotation,
    check_step,
)
