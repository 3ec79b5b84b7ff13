"""`solve` in stored chunks: a results cache and a resume after a kill.

`solve_stored(task, problems, store_root, method=..., models=..., ...)`
splits the problems into chunks of `chunk_size` and, chunk after chunk,
either reads the chunk's records from the store or runs `qstar_jax.solve`
on it and writes them (atomically) before going on. The store of one call
is the directory `store_root/<label>-<digest>`, where the digest is the
SHA-256 of everything the records depend on (`store_key`): the method, its
config, the seed, the batch size, the problems (uid, question, answer) and
the parameters of the models it reads (`models_read`, `model_digest`), and
of the chunk size. So

* a second call with the same arguments rereads every chunk (a cache);
* a call killed after some chunks resumes at the first missing one;
* any change of config, seed, problems or weights gets a new store.

`solve` derives each problem's key from its uid and runs fixed-shape
batches, so a problem's record does not depend on the chunk it was solved
in: a resumed run gives the records of an uninterrupted one.

Chunk files (`chunk_00000.json`, ...) hold the records
(`ProblemRecord` fields), the chunk's seconds and the commit that computed
them; `key.json` holds the key material.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from qstar_jax.configs import config_to_dict
from qstar_jax.results import git_state
from qstar_jax.solver import (METHODS, ProblemRecord, SolveReport,
                              SolverModels, solve, summarize)
from qstar_jax.tasks.base import Problem

KEY_FILE = "key.json"

ChunkCallback = Callable[[int, int, bool], None]
"""on_chunk(chunk index, chunk count, read from the store) after each
chunk (raising in it stops the call, as a kill would)."""


def model_digest(model: nnx.Module | None) -> str | None:
    """SHA-256 of a model's parameters (names, shapes, dtypes, values)
    and of its search-time output and evidence setting; None for None."""
    if model is None:
        return None
    digest = hashlib.sha256()
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, leaf in sorted(flat, key=lambda item: str(item[0])):
        value = np.asarray(jax.device_get(leaf.get_value()))
        digest.update(f"{path}|{value.dtype}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    for name in ("output", "evidence"):
        digest.update(f"{name}={getattr(model, name, None)!r}".encode())
    return digest.hexdigest()


def problems_digest(problems: Sequence[Problem]) -> str:
    """SHA-256 of the problems' uids, questions and answers, in order."""
    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p.uid, p.question, p.answer]).encode())
    return digest.hexdigest()


def models_read(method: str, config) -> tuple[str, ...]:
    """The `SolverModels` fields whose weights a method's records depend
    on (a model it never reads does not change its key): the policy, and
    best-of-N's reranker, beam's scoring critic, Q*'s PRM and QVM, or
    eta-MCTS's fast policy, value, PRM and ORM; every model for a method
    not named here."""
    if method in ("greedy", "majority_vote"):
        return ("policy",)
    if method == "best_of_n":
        return ("policy", config.critic)
    if method == "beam":
        return ("policy", config.score)
    if method == "qstar":
        return ("policy", "prm", "qvm")
    if method == "mcts":
        return ("policy", "fast_policy", "value", "prm", "orm")
    return ("policy", "fast_policy", "prm", "qvm", "value", "orm")


def store_key(*, method: str, config, seed: int, batch_size: int,
              chunk_size: int, problems: Sequence[Problem],
              models: SolverModels, extra: dict | None = None) -> dict:
    """The key material of a store: what the records depend on.

    Args:
      method: the `solve` method.
      config: its config (a dataclass; `config_to_dict`).
      seed: the int seed given to `solve`.
      batch_size: rows per jitted call.
      chunk_size: problems per stored chunk (the files' layout).
      problems: the problems, in order.
      models: the models (those of `models_read` digested with
        `model_digest`; the tokenizer by its `token_texts()`).
      extra: anything else the caller's records depend on (JSON-able).
    """
    models_part = {name: model_digest(getattr(models, name))
                   for name in models_read(method, config)}
    models_part["tokenizer"] = hashlib.sha256(json.dumps(
        list(models.tokenizer.token_texts())).encode()).hexdigest()
    models_part["add_bos"] = models.add_bos
    return {"method": method, "config": config_to_dict(config),
            "seed": seed, "batch_size": batch_size, "chunk_size": chunk_size,
            "problems": {"n": len(problems),
                         "digest": problems_digest(problems)},
            "models": models_part, "extra": extra or {}}


def store_dir(store_root: str, label: str, key: dict) -> str:
    """`store_root/<label>-<first 16 hex digits of the key's SHA-256>`."""
    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "method"
    return os.path.join(store_root, f"{safe}-{digest}")


def _write_json(path: str, content) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, path)


def _read_chunk(path: str, uids: list[str]) -> dict | None:
    """A stored chunk, or None when absent or not of these problems."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        chunk = json.load(f)
    if [r["uid"] for r in chunk["records"]] != uids:
        raise ValueError(f"solve_stored: {path} holds other problems than "
                         f"its chunk ({len(uids)} problems from {uids[0]})")
    return chunk


def solve_stored(task, problems: Sequence[Problem], store_root: str, *,
                 method: str, models: SolverModels, config=None,
                 seed: int = 0, batch_size: int = 8, chunk_size: int = 64,
                 label: str | None = None, key_extra: dict | None = None,
                 reuse: bool = True, progress: bool = True,
                 on_chunk: ChunkCallback | None = None) -> SolveReport:
    """`solve` chunk by chunk, each chunk stored (module docstring).

    Args:
      task, problems, method, models, config, batch_size: as `solve`
        (config None: the method's default).
      store_root: the directory holding the stores.
      seed: the int seed (each problem's key derives from it and its uid).
      chunk_size: problems per stored chunk (a multiple of batch_size keeps
        every batch full).
      label: the store's name prefix (default: the method).
      key_extra: more key material (`store_key`).
      reuse: read stored chunks (False: remove them and compute anew).
      progress: a progress bar over the problems.
      on_chunk: called after every chunk (`ChunkCallback`).

    Returns:
      The `SolveReport` of all the problems: records in order, summary of
      `summarize` with seconds the sum of the chunks' computing seconds
      (as measured when computed, compilation included), plus
      'stored_chunks' (chunks read from the store) and 'chunks'.

    Raises:
      ValueError: seed not an int, chunk_size < 1, no problems, or a store
        whose key material differs from this call's.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"solve_stored: seed must be an int, got "
                         f"{type(seed).__name__}")
    if chunk_size < 1:
        raise ValueError(f"solve_stored: chunk_size must be >= 1, got "
                         f"{chunk_size}")
    problems = list(problems)
    if not problems:
        raise ValueError("solve_stored: no problems given")
    if method not in METHODS:
        raise ValueError(f"solve_stored: unknown method {method!r}; use one "
                         f"of {tuple(METHODS)}")
    config = METHODS[method].default_config() if config is None else config
    key = store_key(method=method, config=config, seed=seed,
                    batch_size=batch_size, chunk_size=chunk_size,
                    problems=problems, models=models, extra=key_extra)
    directory = store_dir(store_root, label or method, key)
    os.makedirs(directory, exist_ok=True)
    key_path = os.path.join(directory, KEY_FILE)
    if os.path.exists(key_path):
        with open(key_path) as f:
            stored_key = json.load(f)
        if stored_key != json.loads(json.dumps(key)):
            raise ValueError(f"solve_stored: {key_path} was written for "
                             f"other key material")
    else:
        _write_json(key_path, key)
    if not reuse:
        for name in os.listdir(directory):
            if name.startswith("chunk_"):
                os.remove(os.path.join(directory, name))
    starts = list(range(0, len(problems), chunk_size))
    records, seconds, stored = [], 0.0, 0
    commit = git_state()["commit"]
    with tqdm(total=len(problems), desc=label or method,
              disable=not progress) as bar:
        for index, start in enumerate(starts):
            chunk = problems[start:start + chunk_size]
            path = os.path.join(directory, f"chunk_{index:05d}.json")
            content = _read_chunk(path, [p.uid for p in chunk])
            was_stored = content is not None
            if not was_stored:
                report = solve(task, chunk, method=method, models=models,
                               config=config, key=seed,
                               batch_size=batch_size, progress=False)
                content = {"records": [dataclasses.asdict(r)
                                       for r in report.records],
                           "seconds": report.summary["seconds"],
                           "commit": commit}
                _write_json(path, content)
            else:
                stored += 1
            records += [ProblemRecord(**r) for r in content["records"]]
            seconds += float(content["seconds"])
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(index, len(starts), was_stored)
    summary = summarize(records, seconds)
    summary.update(stored_chunks=stored, chunks=len(starts))
    return SolveReport(method=method, config=config, records=records,
                       summary=summary)
