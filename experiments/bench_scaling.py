"""Search and training throughput on 1, 2, 4 and 8 (simulated) devices.

For each device count n the script starts a fresh interpreter with
JAX_NUM_CPU_DEVICES=n (JAX fixes its device count at start; on an
accelerator host it uses the first n real devices instead) and measures:

* search: problems/s and node expansions/s of Q* (random tiny policy,
  PRM and QVM; B problems, each with its own key) for every sharding
  choice: `map_rows` and `jit_rows` with replicated models on a ('data' n)
  mesh, and `jit_rows` with tensor-parallel models on ('data' n/2,
  'model' 2); each result is compared with the one-device search;
* training: examples/s of critic training steps through `train` with
  replicated, FSDP and tensor-parallel parameters (the first step, which
  compiles, is excluded); the loss curve is compared with one device.

Compile time is reported apart. Ratios are against the one-device run of
the same invocation. On one CPU the simulated devices share the same
cores, so the ratios measure the overhead of partitioning (collectives,
per-device dispatch, smaller matmuls per device), not speed-up; the JSON
says so and records the machine's load.

Usage:
  python experiments/bench_scaling.py \
      --out experiments/results/bench_scaling.json
  python experiments/bench_scaling.py --devices 1 2 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

VOCAB = 64

CPU_NOTE = (
    "Measured on one CPU whose cores are shared by every simulated device "
    "(JAX_NUM_CPU_DEVICES): n devices do the same total work on the same "
    "cores, so these figures measure partitioning overhead (collectives, "
    "per-device dispatch, smaller matmuls per device), not speed-up. A "
    "ratio below 1 is that overhead; on real accelerators each device adds "
    "compute.")
LOADED_NOTE = (
    " The machine was loaded by other jobs (mean load average {load:.1f} on "
    "{cores} cores): a process with more device threads then gets a larger "
    "share of the contended cores, so a ratio above 1 here is scheduling, "
    "not speed-up either.")


def cpu_note(runs: list[dict]) -> str:
    """CPU_NOTE, plus LOADED_NOTE when the load exceeded the core count."""
    loads = [r["load_before"][0] for run in runs
             for part in ("search", "training") for r in run[part]]
    cores = runs[0]["machine"]["cores"]
    load = float(np.mean(loads))
    extra = LOADED_NOTE.format(load=load, cores=cores) if load > cores else ""
    return CPU_NOTE + extra


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _machine() -> dict:
    import jax
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(),
            "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "jax": jax.__version__, "python": platform.python_version()}


def _search_setup(batch: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from qstar_jax.models.config import tiny
    from qstar_jax.models.critic import Critic
    from qstar_jax.models.decoder import init_decoder
    from qstar_jax.sampling.decode import StopRule
    from qstar_jax.sampling.logits import SamplingConfig
    from qstar_jax.sampling.proposer import ProposerConfig
    from qstar_jax.sampling.states import pad_states
    from qstar_jax.search import AStarConfig, QStarConfig, QStarModels

    def critic(seed):
        c = Critic(tiny(vocab_size=VOCAB, num_layers=1), rngs=nnx.Rngs(seed))
        c.head.kernel[...] = jax.random.normal(jax.random.key(seed),
                                               c.head.kernel[...].shape)
        return c

    models = QStarModels(
        policy=init_decoder(tiny(vocab_size=VOCAB, num_layers=2), seed=0),
        prm=critic(1), qvm=critic(2))
    none = jnp.zeros(VOCAB, bool)
    stop = StopRule(none.at[jnp.asarray([5, 6, 7])].set(True),
                    none.at[2].set(True), none)
    rng = np.random.default_rng(0)
    rows = [rng.integers(8, VOCAB, int(n)).tolist()
            for n in rng.integers(4, 12, batch)]
    tokens, lengths = pad_states(rows, width=12)
    keys = jax.random.split(jax.random.key(0), batch)
    config = QStarConfig(
        search=AStarConfig(num_nodes=48, max_expansions=8,
                           num_trajectories=2, lam=0.5, aggregation="min"),
        proposer=ProposerConfig(num_steps=4, num_samples=6,
                                max_step_tokens=6,
                                sampling=SamplingConfig(temperature=1.0)),
        state_width=64)
    return models, tokens, lengths, keys, stop, config


def _timed(fn, repeats: int):
    """(first call's seconds, median of `repeats` later calls, result)."""
    import jax
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), out


def _search_choices(n: int):
    if n == 1:
        yield "jax.jit, no mesh", 1, 1, "replicated", "jit"
    yield "map_rows, replicated", n, 1, "replicated", "map_rows"
    yield "jit_rows, replicated", n, 1, "replicated", "jit_rows"
    if n >= 2:
        yield "jit_rows, tensor", n // 2, 2, "tensor", "jit_rows"


def bench_search(n: int, batch: int, repeats: int) -> list[dict]:
    import jax

    from qstar_jax.parallel import (MeshConfig, jit_rows, make_mesh,
                                    map_rows, replicate, shard_rows, to_host)
    from qstar_jax.partitioning import bytes_per_device, shard_params
    from qstar_jax.search import qstar_search

    models, tokens, lengths, keys, stop, config = _search_setup(batch)
    records = []
    for name, data, model, layout, wrap in _search_choices(n):
        mesh = make_mesh(MeshConfig(data=data, model=model),
                         devices=jax.devices()[:n])
        if wrap == "jit":
            search = jax.jit(qstar_search, static_argnames="config")
            placed, rows, stop_placed = models, (tokens, lengths, keys), stop
        else:
            placed = shard_params(models, mesh, layout)
            rows = shard_rows((tokens, lengths, keys), mesh)
            stop_placed = replicate(stop, mesh)
        if wrap == "map_rows":
            search = map_rows(qstar_search, mesh, row_argnums=(1, 2, 3),
                              static_argnames=("config",))
        elif wrap == "jit_rows":
            search = jit_rows(qstar_search, mesh,
                              static_argnames=("config",))
        load = _load()
        first, seconds, out = _timed(
            lambda: search(placed, *rows, stop_placed, config=config),
            repeats)
        host = to_host(out)
        expansions = int(host.stats.expansions.sum())
        records.append({
            "choice": name, "devices": n, "mesh": {"data": data,
                                                   "model": model},
            "param_layout": layout, "problems": batch,
            "seconds": round(seconds, 4),
            "compile_and_first_run_s": round(first, 2),
            "problems_per_s": round(batch / seconds, 3),
            "expansions_per_s": round(expansions / seconds, 2),
            "expansions": expansions,
            "model_bytes_per_device": bytes_per_device(models, mesh,
                                                       layout),
            "load_before": load, "load_after": _load(),
            "result": {"best": host.best.tolist(),
                       "pop_order": host.pop_order.tolist(),
                       "trajectory_f": np.round(host.trajectory_f,
                                                4).tolist()}})
    return records


def _critic_run():
    from flax import nnx

    from qstar_jax.learning.critic_training import critic_arrays, critic_loss
    from qstar_jax.models.config import tiny
    from qstar_jax.models.critic import Critic

    rng = np.random.default_rng(1)
    n, length, steps = 256, 48, 4
    tokens = rng.integers(3, VOCAB, (n, length)).astype(np.int32)
    ends = np.tile(np.linspace(11, length - 1, steps).astype(np.int32),
                   (n, 1))
    data = critic_arrays(tokens, np.full(n, length, np.int32), ends,
                         rng.random((n, steps)), np.ones((n, steps), bool))
    critic = Critic(tiny(vocab_size=VOCAB, num_layers=2), rngs=nnx.Rngs(0))
    return critic, data, critic_loss("mse")


def bench_training(n: int, batch: int, steps: int) -> list[dict]:
    import jax
    from flax import nnx

    from qstar_jax.parallel import MeshConfig, make_mesh
    from qstar_jax.partitioning import bytes_per_device
    from qstar_jax.training.trainer import TrainConfig, train

    config = TrainConfig(learning_rate=1e-3, warmup_steps=1,
                         total_steps=steps, batch_size=batch, log_every=1)
    # (layout, data, model); None: plain `train` with no mesh (baseline).
    choices = [(None, 1, 1)] if n == 1 else []
    choices += [("replicated", n, 1)]
    if n >= 2:
        choices += [("fsdp", n, 1), ("tensor", n // 2, 2)]
    records = []
    for layout, data, model in choices:
        critic, arrays, loss = _critic_run()
        mesh = make_mesh(MeshConfig(data=data, model=model),
                         devices=jax.devices()[:n])
        load = _load()
        result = train(critic, arrays, loss, config, progress=False,
                       mesh=None if layout is None else mesh,
                       param_layout=layout or "replicated")
        times = [r["elapsed_s"] for r in result.history]
        steady = (times[-1] - times[0]) / (len(times) - 1)
        params = nnx.state(critic, nnx.Param)
        records.append({
            "param_layout": layout or "no mesh", "devices": n,
            "mesh": {"data": data, "model": model},
            "batch_size": batch, "steps_timed": len(times) - 1,
            "seconds_per_step": round(steady, 4),
            "examples_per_s": round(batch / steady, 2),
            "first_step_s": round(times[0], 2),
            "param_bytes_per_device": bytes_per_device(
                params, mesh, layout or "replicated"),
            "loss": [round(r["loss"], 6) for r in result.history],
            "load_before": load, "load_after": _load()})
    return records


def worker(n: int, args) -> dict:
    import jax
    if jax.device_count() < n:
        raise SystemExit(f"bench_scaling: {n} devices asked, "
                         f"{jax.device_count()} exist")
    return {"devices": n, "machine": _machine(),
            "search": bench_search(n, args.problems, args.repeats),
            "training": bench_training(n, args.batch_size,
                                       args.train_steps)}


def _compare(runs: list[dict]) -> None:
    """Adds ratios against the one-device run and result checks."""
    base = runs[0]
    search0 = base["search"][0]
    train0 = base["training"][0]
    for run in runs:
        for rec in run["search"]:
            rec["ratio_vs_one_device"] = round(
                rec["problems_per_s"] / search0["problems_per_s"], 3)
            same = (rec["result"]["best"] == search0["result"]["best"]
                    and rec["result"]["pop_order"]
                    == search0["result"]["pop_order"])
            close = np.allclose(rec["result"]["trajectory_f"],
                                search0["result"]["trajectory_f"],
                                atol=1e-3)
            rec["same_search_as_one_device"] = bool(same and close)
        for rec in run["training"]:
            rec["ratio_vs_one_device"] = round(
                rec["examples_per_s"] / train0["examples_per_s"], 3)
            rec["max_loss_difference_vs_one_device"] = float(np.max(np.abs(
                np.array(rec["loss"]) - np.array(train0["loss"]))))
    for run in runs:
        for rec in run["search"]:
            del rec["result"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, nargs="+",
                        default=[1, 2, 4, 8])
    parser.add_argument("--problems", type=int, default=32,
                        help="search batch B (a multiple of every count)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--worker", type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with open(args.out, "w") as f:
            json.dump(worker(args.worker, args), f)
        return
    if args.devices[0] != 1:
        raise SystemExit("bench_scaling: --devices must start with 1 (the "
                         "baseline)")
    for n in args.devices:
        if args.problems % n or args.batch_size % n:
            raise SystemExit(f"bench_scaling: --problems and --batch-size "
                             f"must be multiples of {n}")
    runs, start = [], time.time()
    for n in args.devices:
        part = f"{args.out}.devices{n}.json"
        env = dict(os.environ)
        if env.get("JAX_PLATFORMS", "") in ("", "cpu"):
            env["JAX_NUM_CPU_DEVICES"] = str(n)   # Ignored on accelerators.
        cmd = [sys.executable, __file__, "--worker", str(n), "--out", part,
               "--problems", str(args.problems), "--repeats",
               str(args.repeats), "--batch-size", str(args.batch_size),
               "--train-steps", str(args.train_steps)]
        print(f"bench_scaling: {n} device(s) ...", flush=True)
        subprocess.run(cmd, env=env, check=True)
        with open(part) as f:
            runs.append(json.load(f))
        os.remove(part)
    _compare(runs)
    backend = runs[0]["machine"]["backend"]
    out = {
        "benchmark": "bench_scaling",
        "note": cpu_note(runs) if backend == "cpu" else (
            f"Measured on {runs[0]['machine']['device_kind']} devices."),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "wall_time_s": round(time.time() - start, 1),
        "machine": runs[0]["machine"],
        "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    for run in runs:
        for rec in run["search"]:
            print(f"search  n={run['devices']} {rec['choice']:22s} "
                  f"{rec['problems_per_s']:8.2f} problems/s "
                  f"x{rec['ratio_vs_one_device']:.2f} same="
                  f"{rec['same_search_as_one_device']}")
        for rec in run["training"]:
            print(f"train   n={run['devices']} {rec['param_layout']:22s} "
                  f"{rec['examples_per_s']:8.1f} examples/s "
                  f"x{rec['ratio_vs_one_device']:.2f}")


if __name__ == "__main__":
    main()
