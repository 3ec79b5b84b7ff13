"""Rollout datasets for training critics (the Q-value model and the PRM).

`collect_rollouts` samples M solutions per problem with the policy (or
writes the task's gold solution M times, `solutions='gold'`: correct states
to draw candidate steps at), splits each into steps and stores, per
rollout, the tokens, where every step ends, the graded outcome and the gold
step labels; with K > 0 also the policy's
top-K distinct next steps at every state s_{t+1} (the candidates a' of the
Bellman target max_a' Q(s_{t+1}, a') of fitted Q-iteration). The labels for
"best of a rollout pool" and "completion by a stronger policy" come from
`qstar_jax.learning.completions`.

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

Storage. With `out_dir`, each batch of problems is one chunk of a store on
disk (`qstar_jax.learning.rollout_store` describes the format); a killed run
resumes from the chunks already written. The dataset itself is
`qstar_jax.learning.rollout_data.RolloutDataset`.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qstar_jax.learning.rollout_data import (RolloutDataset, Transitions,
                                             transitions)
from qstar_jax.learning.rollout_store import (FORMAT_VERSION, META_FILE,
                                              RolloutStoreError, _load_chunk,
                                              _meta, _open_store, _save_npz,
                                              chunk_path, load_rollouts,
                                              policy_fingerprint,
                                              save_rollouts)
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling import states
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.states import pad_batch
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps, rollout
from qstar_jax.tasks.tiny_policy import encode_prompts

__all__ = [
    # collection
    "CANDIDATE_STREAM", "COMPLETION_STREAM", "ROLLOUT_STREAM",
    "SOLUTION_SOURCES", "RolloutConfig", "collect_rollouts",
    "default_stop_rule", "derive_keys", "gold_solution_ids",
    # rollout_data
    "RolloutDataset", "Transitions", "transitions",
    # rollout_store
    "FORMAT_VERSION", "META_FILE", "RolloutStoreError", "chunk_path",
    "load_rollouts", "policy_fingerprint", "save_rollouts",
]

ROLLOUT_STREAM, CANDIDATE_STREAM, COMPLETION_STREAM = 0, 1, 2
SOLUTION_SOURCES = ("policy", "gold")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """Static settings of rollout collection.

    Attributes:
      num_rollouts: M solutions sampled per problem.
      sampling: how solution tokens (and candidate steps) are drawn.
      solutions: 'policy' (sampled by the policy) or 'gold' (the task's
        gold solution, `task.format_solution` + eos, written M times: each
        copy draws its own candidates, so M > 1 gives more candidate steps
        at the same correct states).
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
    solutions: str = "policy"
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
        if self.solutions not in SOLUTION_SOURCES:
            raise ValueError(f"solutions={self.solutions!r}; use one of "
                             f"{SOLUTION_SOURCES}")
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
    """The task's stop rule (`states.task_stop_rule`): its delimiter ends a
    step, EOS ends a solution, and its `final_marker` (ArithChain and GSM8K:
    '####') marks the final-answer step."""
    return states.task_stop_rule(tokenizer, task)


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


def _state_rows(ds_tokens, ends, pad_id):
    """[N, L] states tokens[:end + 1] (pad after) and their lengths [N]."""
    lengths = (ends + 1).astype(np.int32)
    keep = np.arange(ds_tokens.shape[1])[None, :] < lengths[:, None]
    return np.where(keep, ds_tokens, pad_id).astype(np.int32), lengths


def gold_solution_ids(tokenizer, task, problems, copies: int,
                      max_tokens: int, pad_id: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The gold solutions as the policy writes them: `task.format_solution`
    followed by eos, repeated `copies` times.

    Returns:
      tokens [N, copies, max_tokens] int32 (pad after) and lengths
      [N, copies] int32.

    Raises:
      ValueError: a gold solution is longer than `max_tokens`.
    """
    tokens = np.full((len(problems), copies, max_tokens), pad_id, np.int32)
    lengths = np.zeros((len(problems), copies), np.int32)
    for i, p in enumerate(problems):
        ids = tokenizer.encode(task.format_solution(p), add_eos=True)
        if len(ids) > max_tokens:
            raise ValueError(f"the gold solution of {p.uid} has {len(ids)} "
                             f"tokens > max_tokens {max_tokens}")
        tokens[i, :, :len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


def _collect_chunk(policy, tokenizer, task, problems, idx, config, stop,
                   split, pad_id) -> RolloutDataset:
    """The rollouts (and candidates) of one batch of problem indices."""
    b, m, s = config.batch_size, config.num_rollouts, config.max_steps
    masks = _Masks.of(stop)
    chunk = [problems[int(i)] for i in idx]
    prompts, prompt_lens = encode_prompts(tokenizer, task, chunk,
                                          config.prompt_width)
    if config.solutions == "gold":
        sol, sol_lens = gold_solution_ids(tokenizer, task, chunk, m,
                                          config.max_tokens, pad_id)
    else:
        keys = derive_keys(config.seed, ROLLOUT_STREAM, pad_batch(idx, b))
        sol, sol_lens = jax.device_get(_sample(
            policy, pad_batch(prompts, b), pad_batch(prompt_lens, b), keys,
            stop, num_samples=m, max_tokens=config.max_tokens,
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
                           pad_batch(ds.problem_index[rr], n),
                           pad_batch(ds.sample_index[rr], n),
                           pad_batch(tt, n))
        toks, lens, valid, logp, fin = (x[:len(rr)] for x in jax.device_get(
            _propose(policy, pad_batch(tokens, n), pad_batch(lengths, n),
                     keys, stop, config=proposer)))
        cand["cand_tokens"][rr, tt] = np.where(valid[..., None], toks, pad_id)
        cand["cand_lengths"][rr, tt] = np.where(valid, lens, 0)
        cand["cand_valid"][rr, tt] = valid
        cand["cand_log_probs"][rr, tt] = np.where(valid, logp, -np.inf)
        cand["cand_finished"][rr, tt] = fin & valid
    return dataclasses.replace(ds, **cand)


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
