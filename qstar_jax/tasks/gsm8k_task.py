"""GSM8K as a `Task`: grade-school math word problems, one step per line.

Prompts are plain text by default, or rendered with an instruct model's chat
template when a `chat` formatter is given. A solution is finished once it
states its answer ('#### N' or 'The answer is N'); answers are graded exactly
by `qstar_jax.tasks.grading`, and a step's arithmetic claims are checked by
the safe calculator (the tool critic).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Sequence

from qstar_jax.tasks.base import Problem
from qstar_jax.tasks.calculator import check_step as calculator_check
from qstar_jax.tasks.grading import extract_answer, grade
from qstar_jax.tasks.gsm8k import load_gsm8k

DEFAULT_INSTRUCTION = (
    "Solve the problem step by step, one short step per line, and finish "
    "with a line 'The answer is N.'")

# messages -> text, e.g. `Tokenizer.apply_chat_template`.
ChatFormatter = Callable[[list[dict]], str]

_FINISHED = re.compile(r"####|\banswer is\b[^\n]*\d", re.IGNORECASE)


@functools.lru_cache(maxsize=2)
def _problems(split: str) -> tuple[Problem, ...]:
    return tuple(
        Problem(uid=p.uid, question=p.question, answer=p.short_answer,
                solution_steps=p.steps + (f"#### {p.short_answer}",))
        for p in load_gsm8k(split))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gsm8kTask:
    """GSM8K (implements `qstar_jax.tasks.base.Task`).

    Attributes:
      chat: renders chat messages for instruct models (None: plain prompt).
      instruction: the system message used with `chat`.
      final_marker: the token text that marks the answer step ('####').
    """

    chat: ChatFormatter | None = None
    instruction: str = DEFAULT_INSTRUCTION
    name: str = "gsm8k"
    step_delimiter: str = "\n"
    final_marker: str | None = "####"

    def problems(self, split: str) -> Sequence[Problem]:
        """The packaged 'train' (7,473) or 'test' (1,319) problems."""
        return _problems(split)

    def format_prompt(self, problem: Problem) -> str:
        if self.chat is None:
            return f"Question: {problem.question}\nAnswer:\n"
        return self.chat([{"role": "system", "content": self.instruction},
                          {"role": "user", "content": problem.question}])

    def format_solution(self, problem: Problem) -> str:
        return "\n".join(problem.solution_steps)

    def is_finished(self, solution: str) -> bool:
        """True once the solution states an answer ('####' or 'answer is')."""
        return _FINISHED.search(solution) is not None

    def extract_answer(self, solution: str) -> str | None:
        return extract_answer(solution, mode="auto")

    def reward(self, problem: Problem, solution: str) -> float:
        return grade(solution, problem.answer, mode="auto").reward

    def check_step(self, step: str) -> bool | None:
        check = calculator_check(step)
        return None if check.n_checked == 0 else check.ok
