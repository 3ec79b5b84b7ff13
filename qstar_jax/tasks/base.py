"""The task interface every search and training module uses.

A task owns everything that depends on the problem domain: its problems, how a
prompt is written, how a solution is split into steps, when a solution is
finished, how its answer is graded, and an optional tool check of one step.
Search and learning code only ever talk to a `Task`, so a new domain (the Game
of 24, a code task) is one new file implementing this protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """One problem with a verifiable answer.

    Attributes:
      uid: stable identifier (unique within its task and split).
      question: the problem statement.
      answer: the gold final answer as text (for example "18").
      solution_steps: a gold solution, one reasoning step per entry, the
        final-answer step included (empty when the data has none).
    """

    uid: str
    question: str
    answer: str
    solution_steps: tuple[str, ...] = ()


@runtime_checkable
class Task(Protocol):
    """What search and training need to know about a problem domain.

    Optional attribute (not part of the protocol, so older tasks still
    match): `final_marker: str | None`, text whose token marks the step that
    states the final answer (ArithChain and GSM8K: '####'). Search then
    treats a step holding it as the end of the solution, as it does an end
    token; without it (None or absent) only end tokens (EOS) end a solution.
    It must lie within one token of the policy's vocabulary
    (`sampling.states.task_stop_rule` builds the token rule and says when
    it does not).
    """

    name: str
    step_delimiter: str  # Text that ends a step (default "\n").

    def problems(self, split: str) -> Sequence[Problem]:
        """The problems of a split ('train' or 'test'); never empty."""

    def format_prompt(self, problem: Problem) -> str:
        """The text the policy continues (plain, or via a chat template)."""

    def format_solution(self, problem: Problem) -> str:
        """The gold solution as the policy should write it (for SFT)."""

    def is_finished(self, solution: str) -> bool:
        """Whether the solution text written so far is complete."""

    def extract_answer(self, solution: str) -> str | None:
        """The final answer in a solution, or None when there is none."""

    def reward(self, problem: Problem, solution: str) -> float:
        """1.0 when the solution's answer equals the gold answer, else 0.0."""

    def check_step(self, step: str) -> bool | None:
        """A tool's verdict on one step: True (checks out), False (a wrong
        claim), None (nothing to check). Used by tool-augmented critics."""

