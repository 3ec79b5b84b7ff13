"""Rollout stores on disk: chunk files, meta.json, atomic writes.

A store is a directory written by `collect_rollouts`:

  meta.json           the call that wrote it: format name and version
                      (FORMAT_VERSION), the rollout config (less
                      state_batch_size, which does not change results), the
                      task's name and config, split, problem indices, chunk
                      size, number of chunks, vocab size, a fingerprint of
                      the policy (`policy_fingerprint`) and a sha256 of the
                      stop rule.
  chunk_{i:05d}.npz   the rollouts of problem_indices[i * chunk_size:
                      (i + 1) * chunk_size], problem-major:
                      `RolloutDataset.arrays()` plus `split` (0-d str array)
                      and `version` (0-d int, FORMAT_VERSION).

A single-file dataset (`save_rollouts`) is one such npz file. Every file is
written to a temporary name next to it, fsynced and moved into place with
`os.replace`, so a killed run leaves only whole files and resumes from the
chunks already written. Reading validates every file
(`RolloutDataset.validate`) and checks each chunk against meta.json; a file
that is missing, corrupt, truncated or inconsistent raises
`RolloutStoreError` naming it. Resuming into a store whose meta.json differs
from the call's raises too; starting afresh removes the old chunks and
rewrites meta.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qstar_jax.learning.rollout_data import (_BASE_FIELDS, _CAND_FIELDS,
                                             RolloutDataset)
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import StopRule

FORMAT_VERSION = 1
META_FILE = "meta.json"


class RolloutStoreError(Exception):
    """A rollout store on disk is missing, corrupt or from another call."""


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
