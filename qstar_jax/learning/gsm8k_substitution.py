"""GSM8K number substitution: new questions with recomputed answers.

A GSM8K solution writes its arithmetic as calculator annotations
`<<48/2=24>>`. `substitute_numbers` replaces numbers of the question and
recomputes every annotation with the safe calculator (`tasks.calculator`,
never `eval`), then reads the new answer off the annotation that produced
the old one. It only substitutes where the annotations allow it:

* a question number is replaced when it is a whole number written once in
  the question (not part of a decimal, a thousands group, a percentage or
  a word such as '2nd'), is not one of the unit constants solutions also
  write for words ('half', 'dozen', 'week', 'hour', 'percent': 2, 3, 4,
  7, 10, 12, 24, 30, 52, 60, 100, 1000, 365), and appears as a literal in
  some annotation but never where it could also be an earlier result;
* a literal equal to an earlier annotation's result takes that result's
  new value (a literal that could be two results with different new
  values, or a result and an unchanged question number, rejects the
  problem), any other literal is kept;
* the final answer must be some annotation's result (else the problem is
  rejected), and a result that was a positive whole number must stay one
  (49 / 2 clips is not a question).

New values are drawn uniformly from [ceil(q / 2), 2q] without q. Held-out
duplicates are rejected by template: a question whose text with every
number replaced by '#' (lower case, single spaces) equals the template of a
held-out question is never produced (`question_template`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from fractions import Fraction
from typing import Iterable, Sequence

from qstar_jax.learning.imagination import Imagined, Prompt
from qstar_jax.tasks.calculator import CalculatorError, evaluate
from qstar_jax.tasks.grading import normalize_number
from qstar_jax.tasks.gsm8k import Gsm8kProblem

UNIT_CONSTANTS = frozenset({2, 3, 4, 7, 10, 12, 24, 30, 52, 60, 100, 365,
                            1000})
_ANNOTATION = re.compile(r"<<([^<>\n]*)>>")
_LITERAL = re.compile(r"\d+(?:\.\d+)?")
_WHOLE = re.compile(r"(?<![\w.,])\d+(?![\w%]|[.,]\d)")
_ANY_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Substitution:
    """A GSM8K question with new numbers.

    Attributes:
      question: the new question.
      answer: the recomputed final answer (text).
      annotations: the recomputed annotations ('expr=result').
      replaced: old value -> new value of every substituted number.
    """

    question: str
    answer: str
    annotations: tuple[str, ...]
    replaced: dict[int, int]


def question_template(question: str) -> str:
    """The question with every number as '#', lower case, single spaces."""
    return " ".join(_ANY_NUMBER.sub("#", question.lower()).split())


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def _parse_annotations(problem: Gsm8kProblem
                       ) -> list[tuple[str, Fraction]] | None:
    """(expression, result) of each annotation, or None when one does not
    check out on the calculator or writes thousands separators."""
    out = []
    for text in problem.annotations:
        expr, sep, result = text.rpartition("=")
        if not sep or "," in text:
            return None
        try:
            value = evaluate(expr)
            claimed = evaluate(result)
        except CalculatorError:
            return None
        if value != claimed:
            return None
        out.append((expr, value))
    return out


def substitute_numbers(problem: Gsm8kProblem, rng: random.Random
                       ) -> tuple[Substitution | None, str]:
    """New numbers for one problem (module docstring).

    Returns:
      (the substitution, 'ok') or (None, the reason it is not possible:
      'annotations', 'no_candidates', 'ambiguous', 'answer_not_annotated',
      'calculator', 'invalid_values').
    """
    annotations = _parse_annotations(problem)
    if not annotations:
        return None, "annotations"
    numbers = [Fraction(m.group().replace(",", ""))
               for m in _ANY_NUMBER.finditer(problem.question)]
    whole = [(m.start(), m.end(), int(m.group()))
             for m in _WHOLE.finditer(problem.question)]
    literals = [[Fraction(m.group()) for m in _LITERAL.finditer(expr)]
                for expr, _ in annotations]
    results = [r for _, r in annotations]
    candidates = set()
    for _, _, q in whole:
        used = [j for j, lits in enumerate(literals) if q in lits]
        if (numbers.count(q) == 1 and q not in UNIT_CONSTANTS and q >= 1
                and used and all(q not in results[:j] for j in used)):
            candidates.add(q)
    if not candidates:
        return None, "no_candidates"
    new_values = {}
    for q in sorted(candidates):
        choices = [v for v in range(math.ceil(q / 2), 2 * q + 1) if v != q]
        new_values[q] = rng.choice(choices)
    new_results, new_texts = [], []
    for j, (expr, _) in enumerate(annotations):
        pieces, last = [], 0
        for m in _LITERAL.finditer(expr):
            value = Fraction(m.group())
            if value in new_values:
                new = Fraction(new_values[value])
            else:
                earlier = {new_results[k] for k in range(j)
                           if results[k] == value}
                if len(earlier) > 1 or (earlier and value in numbers
                                        and earlier != {value}):
                    return None, "ambiguous"
                new = earlier.pop() if earlier else value
            pieces += [expr[last:m.start()], _show(new)]
            last = m.end()
        new_expr = "".join(pieces) + expr[last:]
        try:
            value = evaluate(new_expr)
        except CalculatorError:
            return None, "calculator"
        if results[j] > 0 and results[j].denominator == 1 and (
                value <= 0 or value.denominator != 1):
            return None, "invalid_values"
        new_results.append(value)
        new_texts.append(f"{new_expr}={_show(value)}")
    answer = normalize_number(problem.short_answer)
    producing = [j for j, r in enumerate(results) if r == answer]
    if answer is None or not producing:
        return None, "answer_not_annotated"
    new_answer = new_results[producing[-1]]
    pieces, last = [], 0
    for start, end, q in whole:
        if q in new_values:
            pieces += [problem.question[last:start], str(new_values[q])]
            last = end
    question = "".join(pieces) + problem.question[last:]
    return Substitution(question=question, answer=_show(new_answer),
                        annotations=tuple(new_texts),
                        replaced=dict(new_values)), "ok"


def gsm8k_substitutions(problems: Sequence[Gsm8kProblem], count: int, *,
                        seed: int, held_out: Iterable[str],
                        max_per_problem: int = 4,
                        source: str = "gsm8k_substitution") -> Imagined:
    """Up to `count` new GSM8K prompts by number substitution.

    Problems are visited in a seeded random order, up to
    `max_per_problem` passes (draw d of problem i uses
    `random.Random(f'{seed}:{uid}:{d}')`); a question whose template is a
    held-out question's, or that was produced before, is not kept.

    Args:
      problems: source problems (the training split).
      count: prompts wanted.
      seed: the draw's seed.
      held_out: the held-out questions (the test split's).
      max_per_problem: passes over the problems.
      source: the source's name (and uid prefix).

    Returns:
      `Imagined` (fewer prompts when the problems do not allow `count`);
      `rejected` counts the reasons of `substitute_numbers`, 'held_out'
      and 'duplicate'.
    """
    protected = {question_template(q) for q in held_out}
    order = list(range(len(problems)))
    random.Random(f"{seed}:order").shuffle(order)
    prompts, answers, rejected, seen = [], {}, {}, set()
    for d in range(max_per_problem):
        for i in order:
            if len(prompts) >= count:
                break
            problem = problems[i]
            if question_template(problem.question) in protected:
                rejected["held_out"] = rejected.get("held_out", 0) + 1
                continue
            sub, reason = substitute_numbers(
                problem, random.Random(f"{seed}:{problem.uid}:{d}"))
            if sub is None:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            if sub.question in seen:
                rejected["duplicate"] = rejected.get("duplicate", 0) + 1
                continue
            seen.add(sub.question)
            uid = f"{source}-s{seed}-{problem.uid}-{d}"
            prompts.append(Prompt(uid=uid, question=sub.question,
                                  source=source))
            answers[uid] = sub.answer
    return Imagined(tuple(prompts), answers, rejected)
