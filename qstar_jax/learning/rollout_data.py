"""The rollout dataset: R rollouts of up to S steps each, as NumPy arrays.

`RolloutDataset` holds, per rollout, the tokens (bos + prompt + solution),
where every step ends, the graded outcome, the gold step labels and,
optionally, the policy's top-K distinct next steps at every state s_{t+1}.
`transitions` flattens it into the (s_t, a_t, r_t, s_{t+1}) transitions the
label functions and critic training work on.

Fields. `_BASE_FIELDS` and `_CAND_FIELDS` map every array field to its dtype
and its dims after R: L tokens per row, S steps, K candidates, T tokens per
candidate. The candidate fields are all present or all None.

Episodes. A rollout is `finished` when its last step holds an end or
final-answer token; its last transition is then terminal. A truncated rollout
ends with a non-terminal transition (a time limit, not an end of the
episode), whose s_{t+1} has candidates to bootstrap from.

Datasets are collected by `qstar_jax.learning.rollouts` and stored by
`qstar_jax.learning.rollout_store`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np


_BASE_FIELDS = {  # name: (dtype, trailing dims after R)
    "problem_index": (np.int32, ""), "sample_index": (np.int32, ""),
    "tokens": (np.int32, "L"), "lengths": (np.int32, ""),
    "prompt_lengths": (np.int32, ""), "step_ends": (np.int32, "S"),
    "num_steps": (np.int32, ""), "outcome": (np.float32, ""),
    "step_correct": (np.bool_, "S"), "finished": (np.bool_, "")}
_CAND_FIELDS = {
    "cand_tokens": (np.int32, "SKT"), "cand_lengths": (np.int32, "SK"),
    "cand_valid": (np.bool_, "SK"), "cand_log_probs": (np.float32, "SK"),
    "cand_finished": (np.bool_, "SK")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutDataset:
    """R rollouts with up to S steps each, as NumPy arrays.

    Attributes:
      split: the split the problem indices refer to.
      problem_index: [R] int32 index of the problem in its split.
      sample_index: [R] int32 which of the M rollouts of the problem.
      tokens: [R, L] int32 bos + prompt + solution, right-padded with pad.
      lengths: [R] int32 real tokens.
      prompt_lengths: [R] int32 tokens of bos + prompt.
      step_ends: [R, S] int32 position in `tokens` of the last token of
        step t; -1 for t >= num_steps.
      num_steps: [R] int32 steps of the solution, in [1, S].
      outcome: [R] float32 task.reward of the whole solution (0 or 1).
      step_correct: [R, S] bool gold process labels (`step_correctness` of
        the task where it has one); False in padding.
      finished: [R] bool the solution ended (end or final-answer token).
      cand_tokens: [R, S, K, T] int32 the policy's top-K distinct next steps
        at s_{t+1} = prompt + steps 0..t, most likely first (pad where
        invalid); or None.
      cand_lengths: [R, S, K] int32 tokens per candidate; or None.
      cand_valid: [R, S, K] bool the candidate exists; all False past
        num_steps and at the terminal step of a finished rollout; or None.
      cand_log_probs: [R, S, K] float32 policy log-probability of each
        candidate (-inf where invalid); or None.
      cand_finished: [R, S, K] bool the candidate ends the solution; or None.
    """

    split: str
    problem_index: np.ndarray
    sample_index: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray
    step_ends: np.ndarray
    num_steps: np.ndarray
    outcome: np.ndarray
    step_correct: np.ndarray
    finished: np.ndarray
    cand_tokens: np.ndarray | None = None
    cand_lengths: np.ndarray | None = None
    cand_valid: np.ndarray | None = None
    cand_log_probs: np.ndarray | None = None
    cand_finished: np.ndarray | None = None

    @property
    def num_rollouts(self) -> int:
        """R."""
        return int(self.tokens.shape[0])

    @property
    def has_candidates(self) -> bool:
        return self.cand_tokens is not None

    def step_mask(self) -> np.ndarray:
        """[R, S] bool: step t exists (t < num_steps)."""
        s = self.step_ends.shape[1]
        return np.arange(s)[None, :] < self.num_steps[:, None]

    def terminal_mask(self) -> np.ndarray:
        """[R, S] bool: the last step of a finished rollout."""
        s = self.step_ends.shape[1]
        return ((np.arange(s)[None, :] == self.num_steps[:, None] - 1)
                & self.finished[:, None])

    def open_mask(self) -> np.ndarray:
        """[R, S] bool: steps after which the solution can go on."""
        return self.step_mask() & ~self.terminal_mask()

    def arrays(self) -> dict[str, np.ndarray]:
        """The array fields by name (candidate fields only when present)."""
        names = list(_BASE_FIELDS) + (list(_CAND_FIELDS)
                                      if self.has_candidates else [])
        return {n: getattr(self, n) for n in names}

    def validate(self) -> None:
        """Checks dtypes, shapes and ranges.

        Raises:
          ValueError: naming the first field that is wrong.
        """
        arrays = self.arrays()
        if self.has_candidates != all(getattr(self, n) is not None
                                      for n in _CAND_FIELDS):
            raise ValueError("candidate fields must be all present or all "
                             "None")
        r, l = self.tokens.shape if self.tokens.ndim == 2 else (-1, -1)
        s = self.step_ends.shape[-1] if self.step_ends.ndim == 2 else -1
        k, t = (self.cand_tokens.shape[2:] if self.has_candidates
                and self.cand_tokens.ndim == 4 else (-1, -1))
        dims = {"L": l, "S": s, "K": k, "T": t}
        for name, (dtype, trailing) in {**_BASE_FIELDS, **_CAND_FIELDS}.items():
            if name not in arrays:
                continue
            a = arrays[name]
            shape = (r,) + tuple(dims[d] for d in trailing)
            if a.dtype != dtype or a.shape != shape or -1 in shape:
                raise ValueError(f"{name}: {a.dtype}{list(a.shape)}, expected "
                                 f"{np.dtype(dtype)}{list(shape)}")
        n = self.num_steps
        if ((self.problem_index < 0).any() or (self.sample_index < 0).any()
                or (self.tokens < 0).any()):
            raise ValueError("negative problem_index, sample_index or token")
        if ((n < 1) | (n > s)).any():
            raise ValueError(f"num_steps outside [1, {s}]")
        if not ((1 <= self.prompt_lengths) & (self.prompt_lengths
                                              < self.lengths)
                & (self.lengths <= l)).all():
            raise ValueError("need 1 <= prompt_lengths < lengths <= L")
        mask = self.step_mask()
        ends = self.step_ends
        inside = ((ends >= self.prompt_lengths[:, None])
                  & (ends < self.lengths[:, None]))
        if (mask & ~inside).any() or (~mask & (ends != -1)).any():
            raise ValueError("step_ends outside [prompt_lengths, lengths) "
                             "or not -1 past num_steps")
        if (mask[:, 1:] & (np.diff(ends, axis=1) <= 0)).any():
            raise ValueError("step_ends not increasing")
        if (ends[np.arange(r), n - 1] != self.lengths - 1).any():
            raise ValueError("the last step does not end at the last token")
        if not (np.isfinite(self.outcome).all() and (self.outcome >= 0).all()
                and (self.outcome <= 1).all()):
            raise ValueError("outcome outside [0, 1]")
        if (self.step_correct & ~mask).any():
            raise ValueError("step_correct True past num_steps")
        if self.has_candidates:
            valid = self.cand_valid
            if (valid & ~self.open_mask()[..., None]).any():
                raise ValueError("cand_valid True past num_steps or at a "
                                 "terminal step")
            if ((self.cand_lengths < 0) | (self.cand_lengths > t)).any() or \
                    (valid & (self.cand_lengths < 1)).any():
                raise ValueError(f"cand_lengths outside [0, {t}] or empty "
                                 "valid candidate")

    @classmethod
    def concatenate(cls, parts: Sequence["RolloutDataset"]
                    ) -> "RolloutDataset":
        """The rollouts of all parts, in order (same split and shapes)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        if len({p.split for p in parts}) != 1 or \
                len({p.has_candidates for p in parts}) != 1:
            raise ValueError("parts differ in split or candidates")
        names = parts[0].arrays()
        return cls(split=parts[0].split, **{
            n: np.concatenate([getattr(p, n) for p in parts]) for n in names})

    def select(self, rows) -> "RolloutDataset":
        """The rollouts at `rows` ([n] indices or a boolean mask [R])."""
        return type(self)(split=self.split, **{
            n: v[rows] for n, v in self.arrays().items()})

    def solution_ids(self, r: int, t: int | None = None) -> np.ndarray:
        """Token ids of rollout r's solution up to step t (all steps: None)."""
        end = self.lengths[r] if t is None else self.step_ends[r, t] + 1
        return self.tokens[r, self.prompt_lengths[r]:end]


class Transitions(NamedTuple):
    """One entry per (rollout, step) transition (s_t, a_t, r_t, s_{t+1}).

    Rewards are sparse and undiscounted: r_t = 0 for every step but the
    rollout's last, where r_t = outcome. Discounting (gamma) is applied by
    the label functions. The last transition of a truncated rollout is not
    terminal: its s_{t+1} has candidates to bootstrap from.

    Attributes:
      rollout: [N] int32 row r of the dataset.
      step: [N] int32 step t (the action a_t is step t).
      terminal: [N] bool s_{t+1} ends the episode.
      reward: [N] float32 r_t.
    """

    rollout: np.ndarray
    step: np.ndarray
    terminal: np.ndarray
    reward: np.ndarray


def transitions(ds: RolloutDataset) -> Transitions:
    """Flat transitions of all rollouts, rollout-major then by step."""
    r, t = np.nonzero(ds.step_mask())
    last = t == ds.num_steps[r] - 1
    return Transitions(
        rollout=r.astype(np.int32), step=t.astype(np.int32),
        terminal=last & ds.finished[r],
        reward=np.where(last, ds.outcome[r], 0.0).astype(np.float32))
