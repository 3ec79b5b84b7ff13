"""Rollout datasets for training critics (the Q-value model and the PRM).

`collect_rollouts` samples M solutions per problem with the policy, splits
each into steps and stores, per rollout, the tokens, where every step ends,
the graded outcome and the gold step labels; with K > 0 also the policy's
top-K distinct next steps at every state s_{t+1} (the candidates a' of the
Bellman target max_a' Q(s_{t+1}, a') of fitted Q-iteration). The labels for
"best of a rollout pool" and "completion by a stronger policy" come from
`completion_returns` (C sampled or greedy completions of every s_{t+1}) and,
for ArithChain, `stronger_solver_returns` (the gold solver that trusts the
written values).

Steps and episodes. A solution is cut after its first step that holds an end
token or a final-answer token (where search would stop too). A step ends at a
delimiter, an end token or the solution's last token; a blank step (only
whitespace or special tokens) is merged into the next step, or into the
previous one at the end of the solution. A solution with more than S steps is
cut after step S, as if the token limit had been hit there. A rollout is
`finished` when its last step holds an end or final-answer token; its last
transition is then terminal. A truncated rollout ends with a non-terminal
transition (a time limit, not an end of the episode).

Randomness. Every random draw is keyed by `derive_keys(seed, stream, ...)`, a
chain of `jax.random.fold_in` over (stream, problem index, sample index,
step), so results do not depend on batch composition, chunking or resuming.

Storage. With `out_dir`, each batch of problems is one `chunk_{i:05d}.npz`
(`RolloutDataset.arrays()` of its rollouts, problem-major, plus `split` and
`version`; written to a temporary file and moved into place with
`os.replace`), next to a `meta.json` describing the
call (format version, config, task, split, problem indices, chunk size,
a fingerprint of the policy and the stop rule). A killed run resumes from
the chunks already written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
import zlib
from functools import partial
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling import states
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps, rollout
from qstar_jax.tasks.tiny_policy import encode_prompts

FORMAT_VERSION = 1
ROLLOUT_STREAM, CANDIDATE_STREAM, COMPLETION_STREAM = 0, 1, 2
META_FILE = "meta.json"


class RolloutStoreError(Exception):
    """A rollout store on disk is missing, corrupt or from another call."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """Static settings of rollout collection.

    Attributes:
      num_rollouts: M solutions sampled per problem.
      sampling: how solution tokens (and candidate steps) are drawn.
      max_tokens: T_sol, the most solution tokens per rollout.
      prompt_width: P, prompt slots (bos + prompt) per row.
      max_steps: S, the most steps kept per rollout.
      num_candidates: K distinct next steps stored per state (0: none).
      candidate_samples: M' >= K samples drawn by the proposer per state.
      max_step_tokens: T, the longest candidate step in tokens.
      batch_size: problems per jitted rollout call (and per stored chunk).
      state_batch_size: states per jitted candidate call.
      seed: the root of every PRNG key.
    """

    num_rollouts: int = 8
    sampling: SamplingConfig = SamplingConfig(temperature=0.9)
    max_tokens: int = 96
    prompt_width: int = 96
    max_steps: int = 12
    num_candidates: int = 6
    candidate_samples: int = 12
    max_step_tokens: int = 32
    batch_size: int = 16
    state_batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("num_rollouts", "max_tokens", "prompt_width",
                     "max_steps", "max_step_tokens", "batch_size",
                     "state_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.num_candidates < 0:
            raise ValueError("num_candidates must be >= 0 (0 disables "
                             f"candidates), got {self.num_candidates}")
        if self.num_candidates and self.candidate_samples < \
                self.num_candidates:
            raise ValueError(f"candidate_samples ({self.candidate_samples}) "
                             f"must be >= num_candidates "
                             f"({self.num_candidates})")

    def proposer_config(self, pad_id: int = 0) -> ProposerConfig:
        """The step proposer that draws the K candidates (K >= 1)."""
        return ProposerConfig(num_steps=self.num_candidates,
                              num_samples=self.candidate_samples,
                              max_step_tokens=self.max_step_tokens,
                              sampling=self.sampling, pad_id=pad_id)


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


def derive_keys(seed: int, stream: int, *indices) -> jax.Array:
    """[N] typed PRNG keys fold_in(...fold_in(key(seed), stream)..., i_k).

    Args:
      seed: root seed; stream: ROLLOUT_STREAM, CANDIDATE_STREAM or
        COMPLETION_STREAM.
      *indices: [N] integer arrays folded in one after another (problem
        index, then sample index, then step).
    """
    idx = np.stack([np.asarray(i, np.int32).reshape(-1) for i in indices], -1)
    return _fold_chain(jax.random.fold_in(jax.random.key(seed), stream),
                       jnp.asarray(idx))


@jax.jit
def _fold_chain(base, idx):
    def one(row):
        key = base
        for j in range(idx.shape[1]):
            key = jax.random.fold_in(key, row[j])
        return key
    return jax.vmap(one)(idx)


def default_stop_rule(tokenizer, task) -> StopRule:
    """The task's delimiter ends a step, EOS ends a solution, '####' marks
    the final-answer step (ArithChain and GSM8K)."""
    return states.stop_rule(tokenizer, delimiter=task.step_delimiter,
                            final_marker="####")


class _Masks(NamedTuple):
    boundary: np.ndarray  # [V] delimiter | end
    finish: np.ndarray    # [V] end | final

    @classmethod
    def of(cls, stop: StopRule) -> "_Masks":
        delim, end, final = (np.asarray(x) for x in stop)
        return cls(boundary=delim | end, finish=end | final)


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids])


def _finish_cut(ids: np.ndarray, masks: _Masks) -> int:
    """Length of `ids` cut after the first step that ends the solution."""
    hits = np.nonzero(masks.finish[ids])[0]
    if hits.size == 0:
        return len(ids)
    after = np.nonzero(masks.boundary[ids[hits[0]:]])[0]
    return len(ids) if after.size == 0 else int(hits[0] + after[0] + 1)


def _split_steps(ids: np.ndarray, masks: _Masks, tokenizer,
                 max_steps: int) -> tuple[int, list[int]]:
    """(cut length, step end positions) of one solution, as documented in
    the module docstring."""
    cut = _finish_cut(ids, masks)
    bounds = np.nonzero(masks.boundary[ids[:cut]])[0].tolist()
    if not bounds or bounds[-1] != cut - 1:
        bounds.append(cut - 1)
    ends, start = [], 0
    for i, end in enumerate(bounds):
        blank = not _decode(tokenizer, ids[start:end + 1]).strip()
        if not blank:
            ends.append(end)
        elif i == len(bounds) - 1:
            ends = ends[:-1] + [end]  # Trailing blank: onto the previous.
        start = end + 1
    ends = ends[:max_steps]
    return ends[-1] + 1, ends


@partial(jax.jit, static_argnames=("num_samples", "max_tokens", "sampling",
                                   "pad_id"))
def _sample(policy, tokens, lengths, keys, stop, *, num_samples, max_tokens,
            sampling, pad_id):
    conts = rollout(policy, tokens, lengths, keys, stop, max_tokens=max_tokens,
                    num_samples=num_samples, sampling=sampling, pad_id=pad_id)
    return conts.tokens, conts.lengths


@partial(jax.jit, static_argnames=("config",))
def _propose(policy, tokens, lengths, keys, stop, *, config):
    p = propose_steps(policy, tokens, lengths, keys, stop, config=config)
    return p.tokens, p.lengths, p.valid, p.log_probs, p.finished


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Pads axis 0 to `rows` by repeating row 0 (fixed jitted shapes)."""
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), 0)])


def _state_rows(ds_tokens, ends, pad_id):
    """[N, L] states tokens[:end + 1] (pad after) and their lengths [N]."""
    lengths = (ends + 1).astype(np.int32)
    keep = np.arange(ds_tokens.shape[1])[None, :] < lengths[:, None]
    return np.where(keep, ds_tokens, pad_id).astype(np.int32), lengths


def _collect_chunk(policy, tokenizer, task, problems, idx, config, stop,
                   split, pad_id) -> RolloutDataset:
    """The rollouts (and candidates) of one batch of problem indices."""
    b, m, s = config.batch_size, config.num_rollouts, config.max_steps
    masks = _Masks.of(stop)
    chunk = [problems[int(i)] for i in idx]
    prompts, prompt_lens = encode_prompts(tokenizer, task, chunk,
                                          config.prompt_width)
    keys = derive_keys(config.seed, ROLLOUT_STREAM, _pad_rows(idx, b))
    sol, sol_lens = jax.device_get(_sample(
        policy, _pad_rows(prompts, b), _pad_rows(prompt_lens, b), keys, stop,
        num_samples=m, max_tokens=config.max_tokens,
        sampling=config.sampling, pad_id=pad_id))
    r, width = len(idx) * m, config.prompt_width + config.max_tokens
    out = dict(problem_index=np.repeat(idx, m).astype(np.int32),
               sample_index=np.tile(np.arange(m, dtype=np.int32), len(idx)),
               tokens=np.full((r, width), pad_id, np.int32),
               lengths=np.zeros(r, np.int32),
               prompt_lengths=np.repeat(prompt_lens, m).astype(np.int32),
               step_ends=np.full((r, s), -1, np.int32),
               num_steps=np.zeros(r, np.int32),
               outcome=np.zeros(r, np.float32),
               step_correct=np.zeros((r, s), bool),
               finished=np.zeros(r, bool))
    step_correctness = getattr(task, "step_correctness", None)
    for row in range(r):
        i, j = divmod(row, m)
        p, ids = prompt_lens[i], sol[i, j, :sol_lens[i, j]]
        cut, ends = _split_steps(ids, masks, tokenizer, s)
        ids = ids[:cut]
        out["tokens"][row, :p] = prompts[i, :p]
        out["tokens"][row, p:p + cut] = ids
        out["lengths"][row] = p + cut
        out["step_ends"][row, :len(ends)] = p + np.asarray(ends)
        out["num_steps"][row] = len(ends)
        out["finished"][row] = masks.finish[ids].any()
        text = _decode(tokenizer, ids)
        out["outcome"][row] = task.reward(chunk[i], text)
        if step_correctness is not None:
            flags = step_correctness(chunk[i], text)[:len(ends)]
            out["step_correct"][row, :len(flags)] = flags
    ds = RolloutDataset(split=split, **out)
    if config.num_candidates:
        ds = _with_candidates(policy, ds, config, stop, pad_id)
    return ds


def _with_candidates(policy, ds, config, stop, pad_id) -> RolloutDataset:
    """Adds the top-K next steps at every open state s_{t+1}."""
    proposer = config.proposer_config(pad_id)
    r, s = ds.step_ends.shape
    k, t = config.num_candidates, config.max_step_tokens
    cand = dict(cand_tokens=np.full((r, s, k, t), pad_id, np.int32),
                cand_lengths=np.zeros((r, s, k), np.int32),
                cand_valid=np.zeros((r, s, k), bool),
                cand_log_probs=np.full((r, s, k), -np.inf, np.float32),
                cand_finished=np.zeros((r, s, k), bool))
    rows, steps = np.nonzero(ds.open_mask())
    n = config.state_batch_size
    for start in range(0, len(rows), n):
        rr, tt = rows[start:start + n], steps[start:start + n]
        tokens, lengths = _state_rows(ds.tokens[rr], ds.step_ends[rr, tt],
                                      pad_id)
        keys = derive_keys(config.seed, CANDIDATE_STREAM,
                           _pad_rows(ds.problem_index[rr], n),
                           _pad_rows(ds.sample_index[rr], n), _pad_rows(tt, n))
        toks, lens, valid, logp, fin = (x[:len(rr)] for x in jax.device_get(
            _propose(policy, _pad_rows(tokens, n), _pad_rows(lengths, n),
                     keys, stop, config=proposer)))
        cand["cand_tokens"][rr, tt] = np.where(valid[..., None], toks, pad_id)
        cand["cand_lengths"][rr, tt] = np.where(valid, lens, 0)
        cand["cand_valid"][rr, tt] = valid
        cand["cand_log_probs"][rr, tt] = np.where(valid, logp, -np.inf)
        cand["cand_finished"][rr, tt] = fin & valid
    return dataclasses.replace(ds, **cand)


def policy_fingerprint(policy: Decoder) -> str:
    """A cheap sha256 of the policy: its config and the first 1024 values of
    every parameter (any fine-tuning changes it)."""
    digest = hashlib.sha256(repr(policy.config).encode())
    pure = nnx.to_pure_dict(nnx.state(policy, nnx.Param))
    for path, leaf in jax.tree_util.tree_leaves_with_path(pure):
        head = np.asarray(jax.device_get(jnp.ravel(leaf)[:1024]), np.float32)
        digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}".encode())
        digest.update(head.tobytes())
    return digest.hexdigest()


def _stop_digest(stop: StopRule) -> str:
    return hashlib.sha256(b"".join(np.asarray(x).tobytes()
                                   for x in stop)).hexdigest()


def _meta(policy, tokenizer, task, indices, config, stop, split) -> dict:
    task_config = getattr(task, "config", None)
    meta = {
        "format": "qstar_jax.learning.rollouts", "version": FORMAT_VERSION,
        "config": {k: v for k, v in dataclasses.asdict(config).items()
                   if k != "state_batch_size"},  # Does not change results.
        "task": {"name": task.name, "config": dataclasses.asdict(task_config)
                 if dataclasses.is_dataclass(task_config) else None},
        "split": split, "problem_indices": indices.tolist(),
        "chunk_size": config.batch_size,
        "num_chunks": -(-len(indices) // config.batch_size),
        "vocab_size": tokenizer.vocab_size,
        "policy": policy_fingerprint(policy), "stop_rule": _stop_digest(stop)}
    return json.loads(json.dumps(meta))  # Tuples as lists, as on disk.


def chunk_path(out_dir: str, i: int) -> str:
    """The file of chunk i of a store."""
    return os.path.join(out_dir, f"chunk_{i:05d}.npz")


def _write_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npz(path: str, ds: RolloutDataset) -> None:
    _write_atomic(path, lambda f: np.savez_compressed(
        f, split=np.array(ds.split), version=np.array(FORMAT_VERSION),
        **ds.arrays()))


def _load_npz(path: str) -> RolloutDataset:
    """Reads and validates one npz file; RolloutStoreError names it."""
    if not os.path.exists(path):
        raise RolloutStoreError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        if int(arrays.pop("version")) != FORMAT_VERSION:
            raise RolloutStoreError(f"{path}: format version differs")
        unknown = set(arrays) - {"split"} - set(_BASE_FIELDS) - set(
            _CAND_FIELDS)
        if unknown:
            raise RolloutStoreError(f"{path}: unknown arrays {unknown}")
        ds = RolloutDataset(split=str(arrays.pop("split")), **arrays)
        ds.validate()
    except (OSError, ValueError, EOFError, KeyError, TypeError,
            zipfile.BadZipFile, zlib.error) as e:
        raise RolloutStoreError(f"{path}: corrupt or truncated rollout "
                                f"file ({type(e).__name__}: {e}); delete it "
                                "and collect again") from e
    return ds


def save_rollouts(ds: RolloutDataset, path: str) -> None:
    """Writes a dataset to one .npz file (atomically)."""
    ds.validate()
    _save_npz(path, ds)


def _read_meta(out_dir: str) -> dict:
    path = os.path.join(out_dir, META_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RolloutStoreError(f"{path}: unreadable ({e})") from e


def _load_chunk(out_dir: str, i: int, meta: dict) -> RolloutDataset:
    path = chunk_path(out_dir, i)
    ds = _load_npz(path)
    c, m = meta["config"], meta["config"]["num_rollouts"]
    idx = meta["problem_indices"][i * meta["chunk_size"]:
                                  (i + 1) * meta["chunk_size"]]
    expect = {"split": meta["split"],
              "problem_index": np.repeat(idx, m).tolist(),
              "sample_index": list(range(m)) * len(idx),
              "width": c["prompt_width"] + c["max_tokens"],
              "max_steps": c["max_steps"],
              "candidates": c["num_candidates"] > 0}
    got = {"split": ds.split, "problem_index": ds.problem_index.tolist(),
           "sample_index": ds.sample_index.tolist(),
           "width": ds.tokens.shape[1], "max_steps": ds.step_ends.shape[1],
           "candidates": ds.has_candidates}
    if ds.has_candidates:
        expect["cand_shape"] = [c["num_candidates"], c["max_step_tokens"]]
        got["cand_shape"] = list(ds.cand_tokens.shape[2:])
    bad = [k for k in expect if expect[k] != got[k]]
    if bad:
        raise RolloutStoreError(f"{path}: does not match {META_FILE} in "
                                f"{bad}")
    return ds


def load_rollouts(path: str) -> RolloutDataset:
    """Loads a store written by `collect_rollouts` (a directory) or a file
    written by `save_rollouts`.

    Raises:
      RolloutStoreError: meta.json unreadable, or a chunk missing, corrupt,
        truncated or inconsistent with meta.json (the file is named).
    """
    if not os.path.isdir(path):
        return _load_npz(path)
    meta = _read_meta(path)
    if meta.get("version") != FORMAT_VERSION:
        raise RolloutStoreError(f"{path}: format version "
                                f"{meta.get('version')} != {FORMAT_VERSION}")
    return RolloutDataset.concatenate(
        [_load_chunk(path, i, meta) for i in range(meta["num_chunks"])])


def _open_store(out_dir: str, meta: dict, resume: bool) -> None:
    """Creates or checks the store; without resume, old chunks are removed."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, META_FILE)
    if resume and os.path.exists(path):
        stored = _read_meta(out_dir)
        if stored != meta:
            diff = sorted(k for k in meta.keys() | stored.keys()
                          if meta.get(k) != stored.get(k))
            raise RolloutStoreError(
                f"{path}: the store was written by a different call "
                f"(differs in {diff}); use another out_dir or resume=False")
        return
    for name in os.listdir(out_dir):
        if name.startswith("chunk_") and name.endswith(".npz"):
            os.remove(os.path.join(out_dir, name))
    _write_atomic(path, lambda f: f.write(json.dumps(meta, indent=1).encode()))


def collect_rollouts(policy: Decoder, tokenizer, task,
                     problem_indices: Sequence[int], config: RolloutConfig, *,
                     split: str = "train", out_dir: str | None = None,
                     resume: bool = True, progress: bool = True,
                     stop: StopRule | None = None) -> RolloutDataset:
    """M rollouts per problem, split into steps, graded, with candidates.

    Args:
      policy: the policy decoder.
      tokenizer: its tokenizer (encode, decode, pad_id, vocab_size).
      task: the task (prompts, reward, optional step_correctness).
      problem_indices: N indices into `task.problems(split)`.
      config: collection settings.
      split: 'train' or 'test'.
      out_dir: where to store chunks and meta.json (None: memory only).
      resume: load chunks already in `out_dir` instead of recomputing;
        False starts the store afresh.
      progress: show a progress bar over problem batches.
      stop: step / end / final-answer tokens (default `default_stop_rule`).

    Returns:
      The `RolloutDataset` of R = N * M rollouts, problem-major.

    Raises:
      RolloutStoreError: `out_dir` holds a store of another call, or a
        corrupt chunk.
      CacheOverflowError: prompt + solution + step exceeds the context.
    """
    indices = np.asarray(problem_indices, np.int64).reshape(-1)
    problems = task.problems(split)
    if indices.size == 0 or (indices < 0).any() or \
            (indices >= len(problems)).any():
        raise ValueError(f"problem indices must be a non-empty subset of "
                         f"[0, {len(problems)})")
    stop = default_stop_rule(tokenizer, task) if stop is None else stop
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    width = config.prompt_width + config.max_tokens
    states.check_context(policy.config, width,
                         config.max_step_tokens if config.num_candidates
                         else 0)
    meta = _meta(policy, tokenizer, task, indices, config, stop, split)
    if out_dir is not None:
        _open_store(out_dir, meta, resume)
    parts = []
    b = config.batch_size
    for i in tqdm(range(meta["num_chunks"]), desc="rollouts",
                  disable=not progress):
        if out_dir is not None and os.path.exists(chunk_path(out_dir, i)):
            parts.append(_load_chunk(out_dir, i, meta))
            continue
        part = _collect_chunk(policy, tokenizer, task, problems,
                              indices[i * b:(i + 1) * b], config, stop, split,
                              pad_id)
        if out_dir is not None:
            _save_npz(chunk_path(out_dir, i), part)
        parts.append(part)
    return RolloutDataset.concatenate(parts)


class CompletionBatch(NamedTuple):
    """C completions of n open states s_{t+1} of a dataset.

    Attributes:
      rollout: [n] int32 row r; step: [n] int32 step t.
      tokens: [n, C, T] int32 completion tokens (pad after the length).
      lengths: [n, C] int32.
    """

    rollout: np.ndarray
    step: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray


def iter_completions(policy: Decoder, ds: RolloutDataset, stop: StopRule, *,
                     num_completions: int, sampling: SamplingConfig,
                     max_tokens: int, batch_size: int, seed: int,
                     pad_id: int = 0, progress: bool = True
                     ) -> Iterator[CompletionBatch]:
    """Samples C completions of every open state s_{t+1}, batch by batch.

    State (r, t) is keyed by (seed, COMPLETION_STREAM, problem, sample, t);
    completion c by the sampler's fold_in of c. The policy must share the
    dataset's tokenizer.

    Args:
      policy: the decoder that completes (the policy itself, or a stronger
        one with greedy sampling).
      ds: the rollouts; open states are `ds.open_mask()`.
      stop: end tokens stop a completion (delimiters do not).
      num_completions: C; sampling: how tokens are drawn; max_tokens: T.
      batch_size: states per jitted call (the last batch is padded).
      seed: root of the keys.
      pad_id: filler after each completion.
      progress: show a progress bar.

    Yields:
      `CompletionBatch` of at most `batch_size` states.
    """
    states.check_context(policy.config, ds.tokens.shape[1], max_tokens)
    rows, steps = np.nonzero(ds.open_mask())
    n = batch_size
    for start in tqdm(range(0, len(rows), n), desc="completions",
                      disable=not progress):
        rr, tt = rows[start:start + n], steps[start:start + n]
        tokens, lengths = _state_rows(ds.tokens[rr], ds.step_ends[rr, tt],
                                      pad_id)
        keys = derive_keys(seed, COMPLETION_STREAM,
                           _pad_rows(ds.problem_index[rr], n),
                           _pad_rows(ds.sample_index[rr], n), _pad_rows(tt, n))
        out, out_len = jax.device_get(_sample(
            policy, _pad_rows(tokens, n), _pad_rows(lengths, n), keys, stop,
            num_samples=num_completions, max_tokens=max_tokens,
            sampling=sampling, pad_id=pad_id))
        yield CompletionBatch(rollout=rr.astype(np.int32),
                              step=tt.astype(np.int32),
                              tokens=out[:len(rr)], lengths=out_len[:len(rr)])


def completion_text(ds: RolloutDataset, tokenizer, r: int, t: int,
                    completion: np.ndarray, stop: StopRule) -> str:
    """The solution text of s_{t+1} of rollout r continued by `completion`
    (cut after its first step that ends the solution)."""
    cut = _finish_cut(completion, _Masks.of(stop))
    return _decode(tokenizer, np.concatenate([ds.solution_ids(r, t),
                                              completion[:cut]]))


def completion_returns(policy: Decoder, tokenizer, task, ds: RolloutDataset,
                       *, num_completions: int, sampling: SamplingConfig,
                       max_tokens: int, batch_size: int, seed: int,
                       progress: bool = True, stop: StopRule | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Graded outcomes of C completions of every open state s_{t+1}.

    Serves "best of a rollout pool" (the policy itself, sampled) and
    "completion by a stronger policy" (a larger decoder with the same
    tokenizer, greedy, C = 1). Returns are undiscounted 0/1 task.reward of
    the prefix (steps 0..t) followed by the completion, cut after its first
    step that ends the solution.

    Args:
      policy: the decoder that completes; tokenizer: the dataset's.
      task: grades the texts (problems of `ds.split`).
      ds: the rollouts.
      num_completions: C; sampling: how tokens are drawn; max_tokens: T
        tokens per completion; batch_size: states per jitted call; seed:
        root of the keys (see `iter_completions`).
      progress: show a progress bar.
      stop: end / final-answer tokens (default `default_stop_rule`).

    Returns:
      returns [R, S, C] float32 and valid [R, S, C] bool: False past
      num_steps and at the terminal step of a finished rollout (the label
      functions use the rollout's own outcome there).
    """
    stop = default_stop_rule(tokenizer, task) if stop is None else stop
    r, s = ds.step_ends.shape
    returns = np.zeros((r, s, num_completions), np.float32)
    valid = np.zeros((r, s, num_completions), bool)
    problems = task.problems(ds.split)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    for batch in iter_completions(
            policy, ds, stop, num_completions=num_completions,
            sampling=sampling, max_tokens=max_tokens, batch_size=batch_size,
            seed=seed, pad_id=pad_id, progress=progress):
        for i, (rr, tt) in enumerate(zip(batch.rollout, batch.step)):
            problem = problems[int(ds.problem_index[rr])]
            for c in range(num_completions):
                text = completion_text(
                    ds, tokenizer, rr, tt,
                    batch.tokens[i, c, :batch.lengths[i, c]], stop)
                returns[rr, tt, c] = task.reward(problem, text)
            valid[rr, tt] = True
    return returns, valid


def stronger_solver_returns(task, tokenizer, ds: RolloutDataset
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of the gold solver that trusts the written values.

    Every open state s_{t+1} is continued by `task.continue_written` (for
    ArithChain) and graded by task.reward; a state it cannot continue (the
    last step is not one computation) gets 0. Runs on the host.

    Args:
      task: a task with `continue_written` (ArithChain).
      tokenizer: the dataset's tokenizer.
      ds: the rollouts.

    Returns:
      returns [R, S] float32 and valid [R, S] bool (`ds.open_mask()`).
    """
    problems = task.problems(ds.split)
    valid = ds.open_mask()
    returns = np.zeros(valid.shape, np.float32)
    delim = task.step_delimiter
    for rr, tt in zip(*np.nonzero(valid)):
        problem = problems[int(ds.problem_index[rr])]
        prefix = _decode(tokenizer, ds.solution_ids(rr, tt))
        rest = task.continue_written(problem, prefix)
        if rest:
            sep = "" if prefix.endswith(delim) else delim
            returns[rr, tt] = task.reward(problem,
                                          prefix + sep + delim.join(rest))
    return returns, valid
