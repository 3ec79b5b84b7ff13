"""Search benchmark: the batched JAX A* against a plain-Python heapq A*.

Part (a), engine overhead. The model is the synthetic table environment
(`qstar_jax.search.synthetic`, no language model: a few integer hashes per
child), so the time is the search engine's own. On the same instances it
measures node expansions per second of

  * the jitted batched `astar_search` at B = 1 (the problems one by one, one
    call each) and at B = 64 (all problems in one call), compile time
    excluded and reported separately, and
  * `reference_astar` (heapq, one problem at a time, single-threaded
    Python) on the same problems,

and reports the ratio at each B, for a fixed-budget search (no solution
within reach: every problem uses its whole expansion budget), the same with
the 'lookahead' heuristic (K model-side evaluations per child, so the
Python reference pays K times more per expansion), and an early-stopping
search (problems finish after 6 trajectories, at different times, so a
batch idles on its finished rows: see row_utilization), and the fixed-budget
search swept over N = 512, 1024, 2048, 4096 slots (the budget fills every
slot; a heap pop costs log N, and the JAX engine's selection cache reads
about sqrt(N) block bounds and scans one block instead of all N slots).
Every JAX result is checked against the reference (same pop order,
trajectories and status).

Part (b), end to end with the language model (`bench_search_lm.py`): Q*
with the tiny ArithChain policy and two policy-sized critics, problems
searched per second by the batched jitted search at B = 64, re-encoding
every state or from per-node key/value pools (`qstar_cached_search`),
against the same searches run one problem at a time by a host Python loop
(re-encoding, or from the same pool); the agreement of all of them on
every problem; seconds and tokens per expansion at depths 1, 4 and 8; and
the compute floor of one expansion on this machine (FLOPs / peak matmul
rate).

Usage:
  python experiments/bench_search.py --out experiments/results/bench_search.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.search.astar import STATUS_NAMES, AStarConfig, astar_search
from qstar_jax.search.reference_astar import reference_astar
from qstar_jax.search.synthetic import SyntheticEnv

from bench_search_lm import lm_end_to_end


def machine_info() -> dict:
    """Where the numbers come from, and how busy the machine was."""
    load = os.getloadavg()
    cpus = os.cpu_count() or 1
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "platform": platform.platform(), "python": sys.version.split()[0],
        "jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "cpu_count": cpus,
        "cpu_model": model, "load_average_start": list(load),
        "busy_at_start": load[0] > 0.5 * cpus,
    }


def _timed(fn, repeats: int) -> list[float]:
    """Wall times of `repeats` calls of fn (results blocked on)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def _jax_search(env: SyntheticEnv, config: AStarConfig):
    """jit(roots [B], keys [B]) -> SearchResult, the tree built inside."""
    look = env.lookahead_fn if config.heuristic == "lookahead" else None

    @jax.jit
    def search(roots, keys):
        tree = env.init_tree(roots, num_nodes=config.num_nodes)
        return astar_search(env.expand_fn, tree, keys, config=config,
                            lookahead_fn=look)
    return search


def _same_as_reference(result, refs) -> bool:
    """Pop order, trajectories and status of every row equal the reference."""
    pops, num = np.asarray(result.pop_order), np.asarray(result.num_pops)
    found = np.asarray(result.trajectories)
    status = np.asarray(result.stats.status)
    return all(
        pops[b, :num[b]].tolist() == ref.pop_order
        and found[b, :len(ref.trajectories)].tolist() == ref.trajectories
        and int(status[b]) == ref.status for b, ref in enumerate(refs))


def engine_overhead(env: SyntheticEnv, config: AStarConfig,
                    num_problems: int, repeats: int, seed: int) -> dict:
    """Part (a) for one setting: expansions per second, JAX vs heapq."""
    roots = np.random.default_rng(seed).integers(0, 2 ** 31, num_problems)
    keys = jax.random.split(jax.random.key(seed), num_problems)

    # The reference, problem by problem.
    ref_times, refs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        refs = [reference_astar(env, int(r), config) for r in roots]
        ref_times.append(time.perf_counter() - start)
    expansions = sum(r.expansions for r in refs)
    ref_rate = expansions / min(ref_times)
    out = {"reference": {
        "seconds": min(ref_times), "expansions": expansions,
        "expansions_per_s": ref_rate,
        "status_counts": {name: sum(r.status == i for r in refs)
                          for i, name in enumerate(STATUS_NAMES)}}}

    for batch in (1, num_problems):
        search = _jax_search(env, config)
        chunks = [(jnp.asarray(roots[i:i + batch], jnp.int32),
                   keys[i:i + batch])
                  for i in range(0, num_problems, batch)]
        start = time.perf_counter()
        compiled = search.lower(*chunks[0]).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        results = [jax.block_until_ready(compiled(*c)) for c in chunks]
        first_run_s = time.perf_counter() - start
        times = _timed(lambda: [compiled(*c) for c in chunks], repeats)
        done = sum(int(np.asarray(r.stats.expansions).sum()) for r in results)
        loops = sum(int(np.asarray(r.num_pops).max()) + 1 for r in results)
        rate = done / min(times)
        out[f"jax_b{batch}"] = {
            "batch": batch, "calls": len(chunks),
            "compile_s": compile_s, "first_run_s": first_run_s,
            "seconds_min": min(times),
            "seconds_median": statistics.median(times),
            "expansions": done, "expansions_per_s": rate,
            "row_utilization": done / (loops * batch),
            "speedup_vs_reference": rate / ref_rate,
            "same_as_reference": all(
                _same_as_reference(r, refs[i * batch:(i + 1) * batch])
                for i, r in enumerate(results)),
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--num-problems", type=int, default=64)
    parser.add_argument("--branching", type=int, default=6)
    parser.add_argument("--max-depth", type=int, default=12,
                        help="depth of the early-stopping problems")
    parser.add_argument("--max-expansions", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", choices=("a", "b", "ab"), default="ab",
                        help="which parts to run")
    parser.add_argument("--lm-problems", type=int, default=64,
                        help="part (b): ArithChain test problems (a "
                             "multiple of 64; 0 skips part (b))")
    parser.add_argument("--sizes", default="512,1024,2048,4096",
                        help="part (a): slot counts N of the fixed-budget "
                             "sweep (budget (N - 1) // branching)")
    parser.add_argument("--lm-shrink-rows", type=int, default=8,
                        help="part (b): also time both batched paths with "
                             "AStarConfig.shrink_rows (0: no)")
    parser.add_argument("--lm-shrink-ratio", type=float, default=2 / 3,
                        help="part (b): AStarConfig.shrink_ratio of the "
                             "shrinking runs")
    parser.add_argument("--lm-host-problems", type=int, default=None,
                        help="part (b): problems the host loop also "
                             "searches (default all)")
    args = parser.parse_args()

    results = {"machine": machine_info(), "argv": sys.argv[1:]}

    # ---- Part (a): engine overhead with a zero-cost scripted model. -------
    def base(max_expansions: int = args.max_expansions, **kwargs):
        # Room for every child: no recycling, N a multiple of 128.
        slots = 1 + max_expansions * args.branching
        return AStarConfig(num_nodes=128 * -(-slots // 128),
                           max_expansions=max_expansions, lam=1.0,
                           aggregation="min", **kwargs)

    # No terminal within reach: every problem spends its whole budget.
    budget_env = SyntheticEnv(seed=args.seed, branching=args.branching,
                              max_depth=args.max_expansions + 1,
                              terminal_prob=0.0, invalid_prob=0.1)
    early_env = SyntheticEnv(seed=args.seed, branching=args.branching,
                             max_depth=args.max_depth, terminal_prob=0.15,
                             invalid_prob=0.1)
    settings = {
        "fixed_budget_edge": (budget_env, base(num_trajectories=1)),
        "fixed_budget_lookahead": (budget_env, base(num_trajectories=1,
                                                    heuristic="lookahead")),
        "early_stop_edge": (early_env, base(num_trajectories=6)),
    }
    # Every slot used: the budget fills N = 512 ... 4096 slots exactly, so
    # the engine's cost per iteration at large N shows (a heap pop costs
    # log N; the selection cache scans about sqrt(N) bounds and one block).
    for n in map(int, args.sizes.split(",")):
        budget = (n - 1) // args.branching
        settings[f"fixed_budget_edge_n{n}"] = (
            dataclasses.replace(budget_env, max_depth=budget + 1),
            AStarConfig(num_nodes=n, max_expansions=budget, lam=1.0,
                        aggregation="min", num_trajectories=1))
    part_a = {"what": "node expansions per second, synthetic model; "
                      "compile excluded", "settings": {}}
    for name, (env, config) in settings.items():
        if "a" not in args.parts:
            break
        row = engine_overhead(env, config, args.num_problems, args.repeats,
                              args.seed)
        row["env"] = dataclasses.asdict(env)
        row["config"] = {k: getattr(config, k) for k in (
            "num_nodes", "max_expansions", "num_trajectories", "lam",
            "aggregation", "heuristic", "when_full")}
        part_a["settings"][name] = row
        print(f"{name}: reference {row['reference']['expansions_per_s']:.0f}"
              f" exp/s; " + "; ".join(
                  f"B={row[k]['batch']} {row[k]['expansions_per_s']:.0f} "
                  f"exp/s ({row[k]['speedup_vs_reference']:.1f}x)"
                  for k in row if k.startswith("jax_b")), flush=True)
    if "a" in args.parts:
        results["engine_overhead"] = part_a

    # ---- Part (b): language-model end-to-end comparison. ------------------
    if "b" in args.parts and args.lm_problems:
        lm = lm_end_to_end(num_problems=args.lm_problems, batch=64,
                           host_problems=args.lm_host_problems,
                           repeats=min(args.repeats, 2), seed=args.seed,
                           shrink_rows=args.lm_shrink_rows,
                           shrink_ratio=args.lm_shrink_ratio)
        results["lm_end_to_end"] = lm
        rates, speed = lm["problems_per_s"], lm["speedups"]
        print("Q* end to end (problems/s): " + ", ".join(
            f"{k} {v:.2f}" for k, v in rates.items()) + "; cached batched "
              f"{speed['cached_batched_vs_reencoding_batched']:.2f}x the "
              f"re-encoding batched, "
              f"{speed['cached_batched_vs_cached_host']:.2f}x the cached "
              f"host loop; agreement " + ", ".join(
                  f"{k} {v['rate']:.3f}" for k, v in
                  lm["agreement"].items()), flush=True)
        if "cached_shrink_batched_vs_cached_host" in speed:
            print("with shrinking batches: cached "
                  f"{speed['cached_shrink_batched_vs_reencoding_batched']:.2f}x"
                  " the full-batch re-encoding, "
                  f"{speed['cached_shrink_batched_vs_reencoding_shrink_batched']:.2f}x"
                  " the shrinking re-encoding, "
                  f"{speed['cached_shrink_batched_vs_cached_host']:.2f}x the "
                  "cached host loop", flush=True)

    load = os.getloadavg()
    results["machine"]["load_average_end"] = list(load)
    results["machine"]["busy_at_end"] = load[0] > 0.5 * os.cpu_count()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
