"""ArithChain: procedural multi-step arithmetic word problems with gold steps.

Each problem is a short GSM8K-like story about one person and one kind of
object: a starting quantity, then one sentence per operation (buying, giving
away, getting several times as many), distractor sentences about other
quantities, and a question. Behind every problem is a structured `Program`
(the start value and the chain of operations); the gold solution writes one
computation per line and the answer last::

    Mia has 34 pens. Mia buys 12 more pens. Leo has 9 cups. Mia gives 5 pens
    to Sam. How many pens does Mia have now?

    34 + 12 = 46
    46 - 5 = 41
    #### 41

Determinism and splits: problem `i` of a split is drawn from a random stream
seeded by `(seed, split, i, attempt)`; a drawn program is accepted for the
split only if the hash of its arithmetic signature (start value, operations
and operands, names excluded) falls in that split's share of the hash space
(`test_percent` of 100 buckets go to 'test'). The same program therefore can
never appear in both splits, with whatever names and sentences, so neither can
a problem text. Every value, intermediate ones included, lies in
`[answer_min, answer_max]` (default 0..999); the most frequent answer of the
default task is about 0.8% of problems, so guessing one number is right
< 1% of the time.

Default difficulty (calibrated on the tiny policy of
`qstar_jax.tasks.tiny_policy`, trained on 2..6 steps): 6 operations on a
start in 10..99, +/- operands in 2..99, multipliers in 2..9, two distractor
sentences. Its greedy decoding solves about 58% of held-out problems with
every step correct (about 87% of 2-step and 70% of 5-step problems): wrong
steps are left for search to repair, mostly a misread direction of "gives".
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Sequence

from qstar_jax.tasks.base import Problem

from qstar_jax.tasks import grading
from qstar_jax.tasks.claims import check_step as calculator_check

OPERATIONS = ("+", "-", "*")
NAMES = ("Mia", "Leo", "Sam", "Ava", "Ben", "Zoe", "Max", "Ivy", "Tom", "Eva",
         "Noah", "Lily", "Omar", "Nina", "Ryan", "Emma", "Jack", "Ella",
         "Liam", "Rosa")
OBJECTS = ("apples", "pens", "cards", "stickers", "marbles", "books",
           "cookies", "shells", "stamps", "coins", "cups", "toys", "beads",
           "eggs", "rocks", "candles", "buttons", "balloons", "pencils",
           "flowers")
_START = ("{p} has {q} {o}.", "{p} starts with {q} {o}.", "{p} owns {q} {o}.")
_ADD = ("{p} buys {q} more {o}.", "{p} finds {q} more {o}.",
        "{x} gives {q} {o} to {p}.", "{p} gets {q} more {o}.")
_SUB = ("{p} gives {q} {o} to {x}.", "{p} loses {q} {o}.",
        "{p} sells {q} {o}.", "{p} uses {q} {o}.")
_MUL = ("{p} now has {q} times as many {o}.",
        "{p} gets {q} times as many {o}.")
_DISTRACT = ("{x} has {q} {o}.", "{p} also has {q} {o}.",
             "{x} buys {q} {o}.")
_QUESTION = ("How many {o} does {p} have now?",
             "How many {o} does {p} have in the end?")
_TEMPLATES = {"+": _ADD, "-": _SUB, "*": _MUL}
_TEMPLATE_OP = {t: op for op, group in _TEMPLATES.items() for t in group}


def _template_pattern(template: str) -> re.Pattern:
    """A template as a regex with named groups p, x (names), q, o."""
    out = re.escape(template)
    for field, group in (("p", r"(?P<p>\w+)"), ("x", r"(?P<x>\w+)"),
                         ("q", r"(?P<q>\d+)"), ("o", r"(?P<o>\w+)")):
        out = out.replace(re.escape("{" + field + "}"), group)
    return re.compile(out)


_TEMPLATE_PATTERNS = tuple((t, _template_pattern(t)) for t in _TEMPLATE_OP)
_STEP = re.compile(r"\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)\s*")
_ANSWER_LINE = re.compile(r"\s*####")


def vocabulary_words() -> tuple[str, ...]:
    """Every word the problem texts use (sorted); for word-level tokenizers."""
    text = " ".join(NAMES + OBJECTS + _START + _ADD + _SUB + _MUL + _DISTRACT
                    + _QUESTION)
    return tuple(sorted(set(re.findall(r"[A-Za-z]+", text)) - {"p", "q", "o",
                                                               "x"}))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithChainConfig:
    """Difficulty and size of the ArithChain task.

    Attributes:
      num_steps_min: fewest operations (lines of computation) per problem.
      num_steps_max: most operations per problem (2..8 supported).
      start_min: smallest starting quantity.
      start_max: largest starting quantity.
      operand_min: smallest operand of + and -.
      operand_max: largest operand of + and -.
      mul_max: largest multiplier of * (multipliers are 2..mul_max).
      operations: the operations used, a subset of ('+', '-', '*').
      num_distractors: sentences with a quantity the question does not need.
      answer_min: smallest value any step may produce (the answer included).
      answer_max: largest value any step may produce (the answer included).
      test_percent: share (in percent) of the program space reserved for the
        test split.
      seed: the task's seed; all problems are a function of it.
      num_train: problems in the 'train' split.
      num_test: problems in the 'test' split.
    """

    num_steps_min: int = 6
    num_steps_max: int = 6
    start_min: int = 10
    start_max: int = 99
    operand_min: int = 2
    operand_max: int = 99
    mul_max: int = 9
    operations: tuple[str, ...] = OPERATIONS
    num_distractors: int = 2
    answer_min: int = 0
    answer_max: int = 999
    test_percent: int = 10
    seed: int = 0
    num_train: int = 200_000
    num_test: int = 2_000

    def __post_init__(self):
        if not 2 <= self.num_steps_min <= self.num_steps_max <= 8:
            raise ValueError("need 2 <= num_steps_min <= num_steps_max <= 8, "
                             f"got {self.num_steps_min}..{self.num_steps_max}")
        if not set(self.operations) <= set(OPERATIONS) or not self.operations:
            raise ValueError(f"operations must be a non-empty subset of "
                             f"{OPERATIONS}, got {self.operations}")
        if not (1 <= self.operand_min <= self.operand_max
                and self.answer_min <= self.start_min <= self.start_max
                <= self.answer_max and self.mul_max >= 2):
            raise ValueError("inconsistent ranges in ArithChainConfig")
        if self.answer_max - self.answer_min < self.operand_max:
            raise ValueError("answer range narrower than the operand range")
        if not 0 < self.test_percent < 100 or self.num_distractors < 0:
            raise ValueError("test_percent must be in (0, 100) and "
                             "num_distractors >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Program:
    """The structured computation behind one problem.

    Attributes:
      start: the starting quantity.
      ops: the operations, one per step ('+', '-' or '*').
      operands: the operand of each step (the second operand; the first is
        the previous value).
    """

    start: int
    ops: tuple[str, ...]
    operands: tuple[int, ...]

    def values(self) -> tuple[int, ...]:
        """[S + 1] the value before the first step and after every step."""
        out = [self.start]
        for op, q in zip(self.ops, self.operands):
            out.append(_apply(op, out[-1], q))
        return tuple(out)

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> tuple[str, ...]:
        """The gold solution: S computation lines and the '#### answer' line."""
        v = self.values()
        lines = [f"{v[i]} {op} {q} = {v[i + 1]}"
                 for i, (op, q) in enumerate(zip(self.ops, self.operands))]
        return tuple(lines) + (f"#### {v[-1]}",)

    def signature(self) -> str:
        """The arithmetic identity of the program (names excluded)."""
        return f"{self.start}|" + "|".join(
            f"{op}{q}" for op, q in zip(self.ops, self.operands))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithChainProblem(Problem):
    """A `Problem` that keeps its structured program (for the gold solver)."""

    program: Program


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def split_of(program: Program, config: ArithChainConfig) -> str:
    """'test' or 'train': the split a program belongs to (a hash partition)."""
    digest = hashlib.sha256(
        f"arithchain:{config.seed}:{program.signature()}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return "test" if bucket < config.test_percent else "train"


def _draw_program(rng: random.Random, c: ArithChainConfig) -> Program:
    num_steps = rng.randint(c.num_steps_min, c.num_steps_max)
    value = rng.randint(c.start_min, c.start_max)
    start, ops, operands = value, [], []
    for _ in range(num_steps):
        choices = []
        if "+" in c.operations and value + c.operand_min <= c.answer_max:
            choices.append("+")
        if "-" in c.operations and value - c.operand_min >= c.answer_min:
            choices.append("-")
        if "*" in c.operations and value * 2 <= c.answer_max and value > 0:
            choices.append("*")
        if not choices:  # Only when '+' alone is configured at the top end.
            choices = ["-"]
        op = rng.choice(choices)
        if op == "+":
            q = rng.randint(c.operand_min,
                            min(c.operand_max, c.answer_max - value))
        elif op == "-":
            q = rng.randint(c.operand_min,
                            min(c.operand_max, value - c.answer_min))
        else:
            q = rng.randint(2, min(c.mul_max, c.answer_max // value))
        value = _apply(op, value, q)
        ops.append(op)
        operands.append(q)
    return Program(start=start, ops=tuple(ops), operands=tuple(operands))


def _render(program: Program, rng: random.Random, c: ArithChainConfig) -> str:
    person, other, third = rng.sample(NAMES, 3)
    obj = rng.choice(OBJECTS)
    fill = dict(p=person, o=obj)
    sentences = [rng.choice(_START).format(q=program.start, **fill)]
    for op, q in zip(program.ops, program.operands):
        sentences.append(rng.choice(_TEMPLATES[op]).format(
            q=q, x=other, **fill))
    for _ in range(c.num_distractors):
        template = rng.choice(_DISTRACT)
        other_obj = rng.choice([o for o in OBJECTS if o != obj])
        q = rng.randint(c.operand_min, max(c.operand_max, c.start_max))
        at = rng.randint(1, len(sentences))
        sentences.insert(at, template.format(p=person, x=third, o=other_obj,
                                             q=q))
    sentences.append(rng.choice(_QUESTION).format(**fill))
    return " ".join(sentences)


class ArithChainProblems(Sequence[ArithChainProblem]):
    """The problems of one split, generated lazily and cached by index."""

    def __init__(self, config: ArithChainConfig, split: str):
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        self.config, self.split = config, split
        self._size = config.num_train if split == "train" else config.num_test
        self._cache: dict[int, ArithChainProblem] = {}

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError(index)
        if index not in self._cache:
            self._cache[index] = make_problem(self.config, self.split, index)
        return self._cache[index]


def make_problem(config: ArithChainConfig, split: str,
                 index: int) -> ArithChainProblem:
    """Problem `index` of `split` (a pure function of the config's seed)."""
    for attempt in range(10_000):
        rng = random.Random(f"{config.seed}:{split}:{index}:{attempt}")
        program = _draw_program(rng, config)
        if split_of(program, config) == split:
            return ArithChainProblem(
                uid=f"arithchain-{split}-{index}",
                question=_render(program, rng, config),
                answer=str(program.answer), solution_steps=program.steps(),
                program=program)
    raise RuntimeError("no program found for the split")  # pragma: no cover


def _lines(solution: str | Sequence[str]) -> list[str]:
    if isinstance(solution, str):
        solution = solution.split("\n")
    return [s for s in (line.strip() for line in solution) if s]


@dataclasses.dataclass(frozen=True)
class ArithChain:
    """The ArithChain task (implements `qstar_jax.tasks.base.Task`).

    Answers are read with the grader's 'hash' mode: only a '####' line counts,
    so a solution that never states its answer earns nothing. The '####'
    token marks the final-answer step (`final_marker`).
    """

    config: ArithChainConfig = ArithChainConfig()
    name: str = "arithchain"
    step_delimiter: str = "\n"
    final_marker: str | None = "####"

    def problems(self, split: str) -> ArithChainProblems:
        """The problems of 'train' or 'test' (lazy, deterministic)."""
        return ArithChainProblems(self.config, split)

    def format_prompt(self, problem: Problem) -> str:
        """The question followed by a newline; steps follow on new lines."""
        return problem.question + "\n"

    def format_solution(self, problem: Problem) -> str:
        """Gold steps joined by newlines (no trailing newline)."""
        return "\n".join(problem.solution_steps)

    def is_finished(self, solution: str) -> bool:
        """True once a '####' answer line has been started."""
        return "####" in solution

    def extract_answer(self, solution: str) -> str | None:
        """The text after the last '####', or None."""
        return grading.extract_answer(solution, mode="hash")

    def reward(self, problem: Problem, solution: str) -> float:
        """1.0 when the '####' answer equals the gold answer, else 0.0."""
        return grading.grade(solution, problem.answer, mode="hash").reward

    def check_step(self, step: str) -> bool | None:
        """The calculator's verdict on the step's claims (None: no claim)."""
        check = calculator_check(step)
        return None if check.n_checked == 0 else check.ok

    def program(self, problem: Problem) -> Program:
        """The structured program behind a problem (regenerated from its uid
        when the problem is a plain `Problem`)."""
        if isinstance(problem, ArithChainProblem):
            return problem.program
        _, split, index = problem.uid.rsplit("-", 2)
        return make_problem(self.config, split, int(index)).program

    def step_templates(self, problem: Problem) -> tuple[str, ...]:
        """The sentence template behind each operation step, in order.

        Parses the problem's story against the templates of `_ADD`, `_SUB`
        and `_MUL` (the operation sentences name the person and the object
        of the question; distractors never match). For analysis: which
        sentences a policy or a critic gets wrong (the two 'gives' templates
        differ only in who gives to whom). Never needed at search time.

        Args:
          problem: an ArithChain problem.

        Returns:
          S template strings, e.g. '{x} gives {q} {o} to {p}.' (an addition).

        Raises:
          ValueError: the story does not parse into exactly the program's
            operations.
        """
        program = self.program(problem)
        sentences = re.findall(r"[^.?]+[.?]", problem.question)
        first = sentences[0].split()
        person, obj = first[0], first[-1].rstrip(".")
        out = []
        for sentence in sentences[1:-1]:
            for template, pattern in _TEMPLATE_PATTERNS:
                m = pattern.fullmatch(sentence.strip())
                if m and m["p"] == person and m["o"] == obj:
                    out.append(template)
                    break
        ops = tuple(_TEMPLATE_OP[t] for t in out)
        if ops != program.ops:
            raise ValueError(f"{problem.uid}: story parses to {ops}, the "
                             f"program has {program.ops}")
        return tuple(out)

    def complete(self, problem: Problem,
                 steps_so_far: str | Sequence[str]) -> list[str]:
        """The stronger policy: the gold remaining steps from any state.

        With k non-empty steps written, returns gold steps k+1.. (the answer
        line included). It continues from the *correct* quantities of the
        problem's program, whatever the written steps say: if an earlier
        step is wrong, the completion silently repairs the chain (its first
        line starts from the correct value), so the completion always ends
        with the correct answer. Once a '####' line was written, or when
        k > S, nothing is left to add and the result is empty.

        Args:
          problem: an ArithChain problem.
          steps_so_far: the solution text so far, or its steps.

        Returns:
          The remaining steps, one string per line.
        """
        written = _lines(steps_so_far)
        if any(_ANSWER_LINE.match(s) for s in written):
            return []
        gold = self.program(problem).steps()
        return list(gold[len(written):])

    def continue_written(self, problem: Problem,
                         steps_so_far: str | Sequence[str]) -> list[str]:
        """The stronger policy that trusts what is written.

        With k non-empty steps written, it takes the result c of the last
        written step (a line `a op b = c`; with k = 0 the program's start
        value), applies the program's operations k+1..S to it with their
        correct operands, and writes the answer line. Unlike `complete`,
        nothing is repaired: a wrong earlier result carries into a
        consistent but wrong final answer. With k >= S only the answer line
        `#### c` is left to write.

        Args:
          problem: an ArithChain problem.
          steps_so_far: the solution text so far, or its steps.

        Returns:
          The remaining steps, one string per line, the answer line last;
          empty when a '####' line was already written or the last written
          step is not one computation `a op b = c` (no completion possible).
        """
        written = _lines(steps_so_far)
        if any(_ANSWER_LINE.match(s) for s in written):
            return []
        program = self.program(problem)
        if written:
            match = _STEP.fullmatch(written[-1])
            if match is None:
                return []
            value = int(match.group(4))
        else:
            value = program.start
        out = []
        for op, q in list(zip(program.ops, program.operands))[len(written):]:
            new = _apply(op, value, q)
            out.append(f"{value} {op} {q} = {new}")
            value = new
        return out + [f"#### {value}"]

    def contrast_steps(self, problem: Problem, index: int) -> list[str]:
        """Wrong versions of gold step `index` (0-based), for contrastive
        critic training: the operation flipped with the arithmetic done
        right ('+' <-> '-', '*' -> '+'; the tiny policy's usual error when
        it misreads who gives to whom) and the right operation with its
        result off by one in a digit. Empty for the answer line.

        Args:
          problem: an ArithChain problem.
          index: a gold step, 0 <= index < len(solution_steps).

        Returns:
          Step texts ('a op b = c'), none equal to the gold step.
        """
        program = self.program(problem)
        if not 0 <= index < len(program.ops):
            return []
        a = program.values()[index]
        op, b = program.ops[index], program.operands[index]
        c = _apply(op, a, b)
        flipped = {"+": "-", "-": "+", "*": "+"}[op]
        off = c + (1 if c % 10 < 9 else -1)
        out = [f"{a} {flipped} {b} = {_apply(flipped, a, b)}",
               f"{a} {op} {b} = {off}"]
        gold = f"{a} {op} {b} = {c}"
        return [s for s in dict.fromkeys(out) if s != gold]

    def step_correctness(self, problem: Problem,
                         solution: str | Sequence[str]) -> list[bool]:
        """Per-step correctness of a written solution against the program.

        Non-empty lines are steps. With S operations, gold values v_0..v_S,
        operations op_i and operands q_i, the i-th step (1-based) is correct
        when:
          * i <= S: it reads `a op b = c` (integers, any spacing) with
            op == op_i, c == a op b (arithmetically right), and it uses the
            right quantities: (a, b) == (v_{i-1}, q_i), or (q_i, v_{i-1}) for
            the commutative + and *. So a step that restarts from a wrong
            earlier result is wrong, and a step after an error that again
            uses the correct values is right.
          * i == S + 1: it is a '####' line whose answer equals v_S.
          * anything else (a premature or repeated '####' line, a step
            beyond S + 1, text that is not one computation) is wrong.

        Args:
          problem: an ArithChain problem.
          solution: the solution text or its steps.

        Returns:
          One bool per step.
        """
        program = self.program(problem)
        values, n = program.values(), len(program.ops)
        out = []
        for i, line in enumerate(_lines(solution), start=1):
            if i <= n:
                out.append(self._step_ok(line, program.ops[i - 1],
                                         values[i - 1],
                                         program.operands[i - 1]))
            elif i == n + 1 and _ANSWER_LINE.match(line):
                out.append(line.split("####", 1)[1].strip() == str(values[n]))
            else:
                out.append(False)
        return out

    @staticmethod
    def _step_ok(line: str, op: str, prev: int, operand: int) -> bool:
        match = _STEP.fullmatch(line)
        if match is None:
            return False
        a, got_op, b, c = match.groups()
        a, b, c = int(a), int(b), int(c)
        if got_op != op or _apply(op, a, b) != c:
            return False
        return (a, b) == (prev, operand) or (
            op in "+*" and (a, b) == (operand, prev))
