"""One results schema for every experiment and benchmark, and its readers.

A results file is JSON:

  {"schema": "qstar_jax.results", "version": 1,
   "name": ..., "config": {...}, "git": {"commit": ..., "dirty": ...},
   "machine": {"platform", "processor", "cpus", "backend", "devices", "jax",
               "load_start": [1, 5, 15 min], "load_end": [...]},
   "created": ISO time, "wall_time_s": ...,
   "methods": {name: {"n", "accuracy", "accuracy_ci95": [low, high],
                      "tokens_per_problem", "model_calls_per_problem",
                      "seconds", ...method-specific fields}},
   "extra": {...}}

`method_summary` turns per-problem outcomes into a method's entry (Wilson 95%
interval on the accuracy), `write_results` stamps the commit and the machine,
`read_results` checks the schema, and `markdown_table` / `plot_accuracy` turn
any results file into the README's table and the accuracy-against-tokens PNG.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from typing import Sequence

import numpy as np

from qstar_jax.learning.metrics import wilson_interval

SCHEMA = "qstar_jax.results"
VERSION = 1


class ResultsFormatError(ValueError):
    """A results file does not follow the schema."""


def machine_info() -> dict:
    """The machine a result was measured on (load averages at call time)."""
    import jax
    info = {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}
    try:
        info["load_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        info["load_start"] = None
    return info


def git_state(path: str | None = None) -> dict:
    """{'commit', 'dirty'} of the repository holding `path` (None values
    outside a repository)."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=cwd, capture_output=True,
                              text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": commit.stdout.strip(),
                "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def method_summary(correct: Sequence[float], *,
                   tokens: Sequence[float] | None = None,
                   model_calls: Sequence[float] | None = None,
                   seconds: float | None = None, **extra) -> dict:
    """A method's entry from per-problem results.

    Args:
      correct: [n] 1/0 (or a reward in [0, 1]) per problem.
      tokens: [n] generated tokens per problem (every sampled token).
      model_calls: [n] batched model calls each problem took part in.
      seconds: wall time of the method (compile included unless stated).
      **extra: method-specific fields (JSON-able).

    Returns:
      {'n', 'accuracy', 'accuracy_ci95', 'tokens_per_problem',
      'model_calls_per_problem', 'seconds', **extra}.
    """
    correct = np.asarray(correct, np.float64)
    n = int(correct.size)
    if n == 0:
        raise ValueError("no problems")
    acc = float(correct.mean())
    out = {"n": n, "accuracy": acc,
           "accuracy_ci95": list(wilson_interval(acc * n, n)),
           "tokens_per_problem": (None if tokens is None
                                  else float(np.mean(tokens))),
           "model_calls_per_problem": (None if model_calls is None
                                       else float(np.mean(model_calls))),
           "seconds": None if seconds is None else round(float(seconds), 2)}
    out.update(extra)
    return out


def write_results(path: str, *, name: str, config: dict,
                  methods: dict[str, dict], machine: dict | None = None,
                  wall_time_s: float | None = None,
                  extra: dict | None = None) -> dict:
    """Writes a results file atomically and returns its content.

    Args:
      path: the JSON file.
      name: the experiment or benchmark.
      config: its config (`configs.config_to_dict`).
      methods: name -> `method_summary` entry.
      machine: `machine_info()` taken at the start (load_end is added now).
      wall_time_s: the whole run's seconds.
      extra: anything else worth keeping.
    """
    machine = dict(machine or machine_info())
    try:
        machine["load_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        machine["load_end"] = None
    content = {"schema": SCHEMA, "version": VERSION, "name": name,
               "config": config, "git": git_state(),
               "machine": machine,
               "created": datetime.datetime.now(datetime.timezone.utc)
               .isoformat(timespec="seconds"),
               "wall_time_s": wall_time_s, "methods": methods,
               "extra": extra or {}}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1, default=float)
    os.replace(tmp, path)
    return content


def read_results(path: str) -> dict:
    """Reads and checks a results file.

    Raises:
      ResultsFormatError: not JSON, another schema or version, or a method
        entry without its required fields.
    """
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsFormatError(f"{path}: {err}") from err
    if content.get("schema") != SCHEMA or content.get("version") != VERSION:
        raise ResultsFormatError(
            f"{path}: schema {content.get('schema')!r} version "
            f"{content.get('version')!r}, expected {SCHEMA!r} {VERSION}")
    for name, entry in content.get("methods", {}).items():
        missing = {"n", "accuracy", "accuracy_ci95"} - set(entry)
        if missing:
            raise ResultsFormatError(f"{path}: method {name!r} lacks "
                                     f"{sorted(missing)}")
    return content


def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def markdown_table(content: dict, methods: Sequence[str] | None = None
                   ) -> str:
    """The README's table: accuracy with its 95% interval, tokens and
    model calls per problem, seconds."""
    lines = ["| method | accuracy (95% CI) | tokens / problem | "
             "model calls / problem | seconds |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name in methods or content["methods"]:
        m = content["methods"][name]
        lo, hi = m["accuracy_ci95"]
        lines.append(
            f"| {name} | {100 * m['accuracy']:.1f}% ({100 * lo:.1f}-"
            f"{100 * hi:.1f}) | {_fmt(m.get('tokens_per_problem'), '.0f')} "
            f"| {_fmt(m.get('model_calls_per_problem'), '.1f')} | "
            f"{_fmt(m.get('seconds'), '.0f')} |")
    return "\n".join(lines)


def plot_accuracy(content: dict, path: str, *,
                  groups: dict[str, Sequence[str]] | None = None,
                  title: str | None = None) -> None:
    """A PNG of accuracy (95% interval bars) against generated tokens per
    problem; `groups` joins methods into lines (one budget sweep each),
    every other method is a single point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = content["methods"]
    groups = dict(groups or {})
    grouped = {m for names in groups.values() for m in names}
    for name in methods:
        if name not in grouped and methods[name].get(
                "tokens_per_problem") is not None:
            groups[name] = [name]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, names in groups.items():
        pts = sorted((methods[n]["tokens_per_problem"], methods[n])
                     for n in names if n in methods
                     and methods[n].get("tokens_per_problem") is not None)
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [100 * p[1]["accuracy"] for p in pts]
        err = [[100 * (p[1]["accuracy"] - p[1]["accuracy_ci95"][0])
                for p in pts],
               [100 * (p[1]["accuracy_ci95"][1] - p[1]["accuracy"])
                for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("accuracy (%), 95% interval")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
