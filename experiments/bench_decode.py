"""Decode throughput of SmolLM2-135M (float32) against this machine's limit.

Measures, in one run:
  * float32 matmul GFLOP/s of this machine at the decoder's shapes;
  * memory read bandwidth (GB/s) of a large reduction;
  * for batch sizes 1, 8 and 64 with a 256-token cache (32 prompt tokens,
    224 generated): prefill time, decode tokens/s (the jitted while-loop
    only) and end-to-end tokens/s, plus the fraction of the compute-bound
    limit (peak matmul GFLOP/s / forward FLOPs per token) and of the
    roofline limit (each step at the slower of compute and memory traffic)
    that the decode reaches;
  * if torch + transformers are importable here (or an interpreter that has
    them is given with --torch-python), HF transformers `generate` on the same
    GGUF, batch and token counts, and our speed-up over it.

Usage:
  python experiments/bench_decode.py --out results/bench_decode.json
  python experiments/bench_decode.py --out r.json --torch-python /work/refenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.models.checkpoint import smollm2_gguf_path
from qstar_jax.models.gguf_loader import load_gguf
from qstar_jax.sampling.decode import StopRule, prefill, sample_continuations
from qstar_jax.sampling.logits import GREEDY, SamplingConfig

PROMPT = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast "
          "every morning and bakes muffins for her friends every day with "
          "four. How much does she make?")


def best_time(fn, repeats: int) -> float:
    """Smallest wall time of `repeats` calls of an already-compiled fn."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(shapes, repeats: int = 20) -> dict:
    """float32 GFLOP/s of jitted matmuls [m, k] @ [k, n]."""
    out = {}
    for m, k, n in shapes:
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f = jax.jit(jnp.matmul)
        f(a, b).block_until_ready()
        seconds = best_time(lambda: f(a, b), repeats)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / seconds / 1e9
    return out


def memory_gbps(megabytes: int = 512, repeats: int = 10) -> float:
    """Read bandwidth (GB/s) of a jitted reduction over a large array."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    return x.nbytes / best_time(lambda: f(x), repeats) / 1e9


def roofline_tokens_per_s(config, batch: int, prompt: int, new: int,
                          peak_gflops: float, gbps: float) -> float:
    """Tokens/s if every decode step ran at the slower of compute and memory.

    A step reads every parameter once and the whole key/value cache (as the
    fixed-shape attention does), and computes `flops_per_token` per row.
    """
    params = config.num_parameters() * 4
    cache = (2 * config.num_layers * batch * config.num_kv_heads
             * (prompt + new) * config.head_dim * 4)
    seconds = 0.0
    for t in range(new):
        flops = batch * config.flops_per_token(prompt + t)
        seconds += max(flops / (peak_gflops * 1e9), (params + cache) /
                       (gbps * 1e9))
    return batch * new / seconds


def prompt_ids(length: int) -> list[int]:
    from qstar_jax.models.tokenizer import Tokenizer
    ids = Tokenizer.from_gguf(smollm2_gguf_path()).encode(PROMPT)
    if len(ids) < length:
        raise ValueError(f"prompt has {len(ids)} tokens, need {length}")
    return ids[:length]


def bench_ours(model, config, ids, batch, new_tokens, sampling, repeats):
    vocab = config.vocab_size
    never = StopRule(jnp.zeros(vocab, bool), jnp.zeros(vocab, bool),
                     jnp.zeros(vocab, bool))
    tokens = jnp.asarray([ids] * batch, jnp.int32)
    lengths = jnp.full((batch,), len(ids), jnp.int32)
    keys = jax.random.split(jax.random.key(0), batch)
    run_prefill = jax.jit(prefill)
    run_decode = jax.jit(lambda m, c, l, k: sample_continuations(
        m, c, l, k, num_samples=1, max_tokens=new_tokens, stop=never,
        sampling=sampling))
    start = time.perf_counter()
    cache, logits = run_prefill(model, tokens, lengths)
    out = run_decode(model, cache, logits, keys)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start
    t_prefill = best_time(lambda: run_prefill(model, tokens, lengths),
                          repeats)
    t_decode = best_time(lambda: run_decode(model, cache, logits, keys),
                         repeats)
    steps = int(out.decode_steps)
    assert int(out.lengths.min()) == new_tokens
    return {
        "batch": batch, "prompt_tokens": len(ids), "new_tokens": new_tokens,
        "cache_tokens": len(ids) + new_tokens, "decode_steps": steps,
        "compile_and_first_run_s": compile_s, "prefill_s": t_prefill,
        "decode_s": t_decode,
        "decode_tokens_per_s": batch * steps / t_decode,
        "end_to_end_tokens_per_s": batch * new_tokens / (t_prefill + t_decode),
    }


def bench_hf(python, gguf, ids, batch, new_tokens):
    script = os.path.join(os.path.dirname(__file__), "hf_generate_timing.py")
    cmd = [python, script, "--gguf", gguf, "--batch", str(batch),
           "--prompt-ids", ",".join(map(str, ids)),
           "--new-tokens", str(new_tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_python(requested: str | None) -> str | None:
    if requested:
        return requested
    try:
        import torch  # noqa: F401  (availability check)
        import transformers  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--sampling", choices=("greedy", "temperature"),
                        default="greedy")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--hf-new-tokens", type=int, default=None,
                        help="generate fewer tokens with HF (default: same)")
    args = parser.parse_args()

    load_start = list(os.getloadavg())
    sampling = GREEDY if args.sampling == "greedy" else SamplingConfig()
    new_tokens = args.cache - args.prompt_tokens
    gflops = matmul_gflops([(64, 576, 1536), (64, 1536, 576),
                            (64, 576, 49152), (1024, 1024, 1024)])
    peak = max(gflops.values())
    gbps = memory_gbps()
    model, config = load_gguf(smollm2_gguf_path())
    ids = prompt_ids(args.prompt_tokens)
    mean_flops = float(np.mean([
        config.flops_per_token(args.prompt_tokens + t)
        for t in range(new_tokens)]))
    limit = peak * 1e9 / mean_flops
    hf_python = torch_python(args.torch_python)
    rows = []
    for batch in map(int, args.batch_sizes.split(",")):
        row = bench_ours(model, config, ids, batch, new_tokens, sampling,
                         args.repeats)
        row["compute_bound_tokens_per_s"] = limit
        row["fraction_of_compute_bound"] = row["decode_tokens_per_s"] / limit
        roof = roofline_tokens_per_s(config, batch, args.prompt_tokens,
                                     new_tokens, peak, gbps)
        row["roofline_tokens_per_s"] = roof
        row["fraction_of_roofline"] = row["decode_tokens_per_s"] / roof
        if hf_python:
            hf_tokens = args.hf_new_tokens or new_tokens
            hf = bench_hf(hf_python, smollm2_gguf_path(), ids, batch,
                          hf_tokens)
            row["hf_transformers"] = hf
            if "tokens_per_s" in hf:
                row["speedup_vs_hf_end_to_end"] = (
                    row["end_to_end_tokens_per_s"] / hf["tokens_per_s"])
        row["load_average"] = list(os.getloadavg())
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "bench_decode", "model": "SmolLM2-135M-Instruct Q4_1 "
        "GGUF dequantized to float32", "sampling": args.sampling,
        "machine": {"platform": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "jax": jax.__version__,
                    "devices": [str(d) for d in jax.devices()],
                    "load_average_start": load_start,
                    "load_average_end": list(os.getloadavg())},
        "matmul_gflops": gflops, "peak_matmul_gflops": peak,
        "memory_read_gbps": gbps,
        "forward_flops_per_token_mean": mean_flops,
        "compute_bound_tokens_per_s": limit, "results": rows,
        "hf_python": hf_python,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
