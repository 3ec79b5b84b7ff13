"""What becomes of a proposed step at the token limits of a search.

Two limits bound every language-model search: a step has at most T tokens
(`max_step_tokens`) and a node's state (prompt plus the steps on its path)
at most P tokens (`state_width`). Neither is ever passed silently:

* A step that used all T tokens without a stop token is *truncated*. What
  happens to it is a config setting (`truncated_steps`):
  - 'drop' (default): the child is not created;
  - 'continue': the child is created and is not terminal (the next step
    continues the cut text);
  - 'finish': the child is terminal, a finished solution (the behaviour
    before this setting existed).
  A truncated step is never finished otherwise, even when it holds the
  final-answer token (its answer may be cut).
* A child whose state would exceed P tokens *overflows*: it is not created
  (its state could not be rebuilt without cutting it).

Both are counted per row in the search statistics (`truncated`,
`overflow`); a finished step (an end token, or a final-answer token in a
step that ended normally) makes a terminal child.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

TRUNCATED_STEPS = ("drop", "continue", "finish")


def check_truncated_steps(owner: str, value: str) -> None:
    """Raises a ValueError unless `value` is one of TRUNCATED_STEPS."""
    if value not in TRUNCATED_STEPS:
        raise ValueError(f"{owner}.truncated_steps={value!r}; use one of "
                         f"{TRUNCATED_STEPS}")


class StepOutcomes(NamedTuple):
    """How proposed steps enter the tree (every field [...] bool).

    Attributes:
      valid: the child is created.
      terminal: the created child ends the solution.
      truncated: the proposal was cut at the step-token limit (created or
        not).
      overflow: the proposal was not created because its state would not
        fit the state width.
    """

    valid: jax.Array
    terminal: jax.Array
    truncated: jax.Array
    overflow: jax.Array


def classify_steps(*, valid: jax.Array, finished: jax.Array,
                   truncated: jax.Array, state_lengths: jax.Array,
                   state_width: int, mode: str) -> StepOutcomes:
    """Applies the rules of the module docstring to proposed steps.

    Args:
      valid: [...] bool the proposal exists (a distinct sample).
      finished: [...] bool it holds an end or final-answer token.
      truncated: [...] bool it used all T tokens without a stop token.
      state_lengths: [...] int32 tokens of the child's state.
      state_width: P.
      mode: one of TRUNCATED_STEPS.

    Returns:
      `StepOutcomes`.
    """
    check_truncated_steps("classify_steps", mode)
    valid = valid.astype(bool)
    cut = truncated.astype(bool) & valid
    kept = valid & ~cut if mode == "drop" else valid
    overflow = kept & (state_lengths > state_width)
    created = kept & ~overflow
    ends = finished.astype(bool) & ~cut
    if mode == "finish":
        ends = ends | cut
    return StepOutcomes(valid=created, terminal=created & ends,
                        truncated=cut, overflow=overflow)
