"""MCTS engine benchmark: our batched MCTS against mctx on the same model.

Both searches run on the same synthetic table (`ActionTableEnv`: a few
integer hashes per call, so the time is the engines' own), at the same
shapes (B problems, A actions, S simulations), both jitted, in one run:

* PUCT: `run_mcts` with 'enumerated' expansion, PUCT and min-max Q against
  `mctx.muzero_policy` (Dirichlet noise off, temperature 0);
* Gumbel: `run_mcts` with 'gumbel' selection against
  `mctx.gumbel_muzero_policy` (Gumbel scale 0 in both, so the searches are
  the same and their visit counts can be compared).

Compile time (lower + compile) is measured apart; then the compiled
searches are called alternately `--repeats` times (so load changes hit
both) and simulations per second are B * S / the median wall time. The
JSON records the machine's load average before and after, and whether the
two engines' root visit counts agree.

Usage:
  python experiments/bench_mcts.py --out experiments/results/bench_mcts.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import mctx
import numpy as np

from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.synthetic_mcts import ActionTableEnv


def machine() -> dict:
    """Where the numbers come from and how busy the machine was."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()
    return {"platform": platform.platform(), "python": sys.version.split()[0],
            "jax": jax.__version__, "mctx": mctx.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": cpus,
            "load_average_start": list(load),
            "busy_at_start": load[0] > 0.5 * cpus}


def compiled(fn, *args) -> tuple[object, float]:
    """(the compiled fn, seconds to lower and compile it)."""
    start = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - start


def pair(name: str, ours, theirs, ours_args, theirs_args, work: int,
         repeats: int) -> dict:
    """Times two searches alternately; returns their figures and ratio."""
    ours_exe, ours_compile = compiled(ours, *ours_args)
    theirs_exe, theirs_compile = compiled(theirs, *theirs_args)
    ours_out = jax.block_until_ready(ours_exe(*ours_args))
    theirs_out = jax.block_until_ready(theirs_exe(*theirs_args))
    times = {"ours": [], "mctx": []}
    for _ in range(repeats):
        for key, exe, args in (("ours", ours_exe, ours_args),
                               ("mctx", theirs_exe, theirs_args)):
            start = time.perf_counter()
            jax.block_until_ready(exe(*args))
            times[key].append(time.perf_counter() - start)
    ours_visits = np.asarray(ours_out.root_visits)
    theirs_visits = np.asarray(theirs_out.search_tree.summary().visit_counts)
    out = {"name": name, "compile_s": {"ours": ours_compile,
                                       "mctx": theirs_compile}}
    for key, ts in times.items():
        med = statistics.median(ts)
        out[key] = {"times_s": ts, "median_s": med, "min_s": min(ts),
                    "simulations_per_s": work / med,
                    "simulations_per_s_best": work / min(ts)}
    out["ratio_median"] = (out["ours"]["simulations_per_s"]
                           / out["mctx"]["simulations_per_s"])
    out["ratio_best"] = (out["ours"]["simulations_per_s_best"]
                         / out["mctx"]["simulations_per_s_best"])
    out["root_visits_equal_rows"] = int(
        (ours_visits == theirs_visits).all(axis=1).sum())
    out["rows"] = int(ours_visits.shape[0])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--simulations", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    b, a, s = args.batch, args.actions, args.simulations
    info = machine()
    env = ActionTableEnv(seed=args.seed, num_actions=a, levels=1 << 16)
    roots = jax.numpy.arange(b, dtype=jax.numpy.int32) * 7919 + args.seed
    keys = jax.random.split(jax.random.key(args.seed), b)
    mctx_key = jax.random.key(args.seed)
    common = dict(num_nodes=s + 1, num_simulations=s, max_depth=s,
                  expansion="enumerated")
    puct = MCTSConfig(selection="puct", q_transform="min_max", **common)
    gumbel = MCTSConfig(selection="gumbel", gumbel_scale=0.0,
                        max_considered=16, **common)

    def ours(config):
        def search(roots, keys):
            tree = env.init_tree(roots, num_nodes=s + 1)
            return run_mcts(env.propose_fn, env.evaluate_fn, tree, keys,
                            config=config)
        return search

    def muzero(roots, key):
        return mctx.muzero_policy(
            None, key, env.mctx_root(roots), env.mctx_recurrent_fn(),
            num_simulations=s, dirichlet_fraction=0.0, temperature=0.0)

    def gumbel_muzero(roots, key):
        return mctx.gumbel_muzero_policy(
            None, key, env.mctx_root(roots), env.mctx_recurrent_fn(),
            num_simulations=s, gumbel_scale=0.0,
            max_num_considered_actions=16)

    results = [
        pair("puct_vs_muzero_policy", ours(puct), muzero, (roots, keys),
             (roots, mctx_key), b * s, args.repeats),
        pair("gumbel_vs_gumbel_muzero_policy", ours(gumbel), gumbel_muzero,
             (roots, keys), (roots, mctx_key), b * s, args.repeats)]
    info["load_average_end"] = list(os.getloadavg())
    report = {"machine": info,
              "settings": {"batch": b, "actions": a, "simulations": s,
                           "repeats": args.repeats, "seed": args.seed,
                           "model": "ActionTableEnv (integer hashes)"},
              "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    for r in results:
        print(f"{r['name']}: ours {r['ours']['simulations_per_s']:,.0f} "
              f"sim/s, mctx {r['mctx']['simulations_per_s']:,.0f} sim/s, "
              f"ratio {r['ratio_median']:.2f}x (best {r['ratio_best']:.2f}x)"
              f"; compile {r['compile_s']['ours']:.1f} s / "
              f"{r['compile_s']['mctx']:.1f} s; root visits equal in "
              f"{r['root_visits_equal_rows']}/{r['rows']} rows")
    return report


if __name__ == "__main__":
    main()
