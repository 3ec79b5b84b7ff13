"""FQI target benchmark: jitted on-device targets against a NumPy loop.

Fitted Q-iteration recomputes y = r + gamma * max_{a' valid} Q(s', a') (y = r
at terminal steps) for every transition in every round. This times
`learning.fqi_targets` (jitted, one call over all transitions) against
`fqi_targets_numpy` (a Python loop over transitions, the independent
reference) on the same seeded transitions, checks that they agree exactly,
and writes the ratio.

Usage:
  python experiments/bench_fqi.py --out experiments/results/bench_fqi.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.learning.labels import fqi_targets, fqi_targets_numpy

from bench_decode import best_time


def transitions(n: int, k: int, seed: int) -> tuple:
    """Seeded transitions: rewards in {0, 1} at terminal steps, Q-values in
    [0, 1], about 10% of candidates invalid, 0.1% NaN."""
    rng = np.random.default_rng(seed)
    terminal = rng.random(n) < 1 / 7
    reward = np.where(terminal, rng.integers(0, 2, n), 0).astype(np.float32)
    next_q = rng.random((n, k), dtype=np.float32)
    next_q[rng.random((n, k)) < 1e-3] = np.nan
    valid = rng.random((n, k)) < 0.9
    return reward, terminal, next_q, valid


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", type=int, nargs="*",
                        default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jitted = fqi_targets                               # Already jitted.
    rows = []
    for n in args.sizes:
        data = transitions(n, args.k, args.seed)
        on_device = [jnp.asarray(x) for x in data]
        out = jitted(*on_device, args.gamma)            # Compile.
        device_s = best_time(lambda: jitted(*on_device, args.gamma),
                           args.repeats)
        t0 = time.perf_counter()
        ref = fqi_targets_numpy(*data, args.gamma)
        numpy_s = time.perf_counter() - t0
        same = bool(np.array_equal(np.asarray(out.targets), ref.targets))
        rows.append({"transitions": n, "candidates": args.k,
                     "device_seconds": device_s,
                     "numpy_loop_seconds": numpy_s,
                     "speedup": numpy_s / device_s,
                     "targets_identical": same,
                     "nan_count": int(out.nan_count)})
        print(f"N={n}: device {device_s * 1e3:.2f} ms, NumPy loop "
              f"{numpy_s * 1e3:.0f} ms, {numpy_s / device_s:.0f}x, "
              f"identical={same}", flush=True)
    result = {"what": "FQI Bellman targets over N transitions with K "
                      "candidates each; device time excludes the host "
                      "transfer and compile",
              "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()],
              "gamma": args.gamma, "rows": rows,
              "load_average": list(os.getloadavg())}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
