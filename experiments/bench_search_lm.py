"""Part (b) of the search benchmark: Q* end to end with the tiny policy.

The same Q* (policy top-K steps, PRM rewards, QVM heuristic, A*) on the same
ArithChain test problems, run two ways:

  * batched: `qstar_search` jitted, B problems per call, every iteration one
    batched policy call and one batched call per critic for all unfinished
    rows;
  * host loop: `host_qstar`, one problem at a time, a Python heap calling the
    jitted `expand_states` on one state per node (how peer systems and the
    official AlphaLLM code run search).

Both use the problem's own PRNG key (`fold_in(key, i)` for its i-th
expansion), so each problem's search is the same computation in both runs;
they can only part where float differences between batch shapes tip a
sampled token or an f tie. Every disagreement is located (first differing
pop) and classified.

Critics: PRM and QVM are critic networks with the policy's architecture,
their backbones initialised from the policy's weights (as critics are before
training) and random heads, or trained critics loaded from a directory
(`--critics`, written by the critic-training experiment).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from bench_decode import matmul_gflops

from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import ProposerConfig
from qstar_jax.search.astar import STATUS_NAMES, AStarConfig
from qstar_jax.search.host_loop import host_qstar
from qstar_jax.search.qstar import QStarConfig, QStarModels, qstar_search
from qstar_jax.search.tree import trajectory_steps
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_policy import (encode_prompts, load_tiny_policy,
                                         stop_rule)


def critic_from_policy(policy: Decoder, seed: int) -> Critic:
    """A critic whose backbone starts as a copy of the policy's decoder and
    whose head is random (scores of order 1), as before critic training."""
    critic = Critic(backbone=nnx.clone(policy), rngs=nnx.Rngs(seed))
    shape = critic.head.kernel[...].shape
    critic.head.kernel[...] = jax.random.normal(jax.random.key(seed), shape)
    return critic


def default_config(num_nodes: int = 64, max_expansions: int = 16,
                   num_steps: int = 4, num_samples: int = 8,
                   max_step_tokens: int = 12,
                   state_width: int = 160) -> QStarConfig:
    """The benchmark's Q* settings (edge heuristic, one trajectory)."""
    return QStarConfig(
        search=AStarConfig(num_nodes=num_nodes, max_expansions=max_expansions,
                           num_trajectories=1, lam=1.0, aggregation="min",
                           heuristic="edge"),
        proposer=ProposerConfig(num_steps=num_steps, num_samples=num_samples,
                                max_step_tokens=max_step_tokens,
                                sampling=SamplingConfig(temperature=1.0)),
        state_width=state_width)


def expansion_flops(policy: Decoder, critics: tuple[Critic, ...],
                    config: QStarConfig) -> dict:
    """Forward FLOPs of one row's expansion as the fixed-shape code runs it.

    The policy prefills the P-slot state (logits at its last token only)
    and decodes M samples of T tokens over P + T slots; each critic encodes
    the state and then its K steps on top (`score_branches`). Attention is
    counted over all slots, as the fixed-shape masks compute it.
    """
    p, t = config.state_width, config.proposer.max_step_tokens
    m, k = config.proposer.num_samples, config.proposer.num_steps

    def no_head(cfg, context):
        return cfg.flops_per_token(context) - 2 * cfg.hidden_size * \
            cfg.vocab_size

    pc = policy.config
    out = {"policy_prefill": p * no_head(pc, p) + 2 * pc.hidden_size
           * pc.vocab_size,
           "policy_decode": m * t * pc.flops_per_token(p + t)}
    for i, critic in enumerate(critics):
        cc = critic.backbone.config
        out[f"critic_{i}"] = p * no_head(cc, p) + k * t * no_head(cc, p + t)
    out["total"] = sum(out.values())
    return out


def _first_divergence(batched, b: int, ref) -> dict:
    """Where problem b's two searches part, and whether it was a near tie."""
    pops = np.asarray(batched.pop_order[b, :int(batched.num_pops[b])])
    n = min(len(pops), len(ref.pop_order))
    at = next((i for i in range(n) if pops[i] != ref.pop_order[i]), n)
    out = {"problem_row": b, "first_different_pop": at,
           "batched_pops": len(pops), "host_pops": len(ref.pop_order)}
    if at < n:
        f = np.asarray(batched.tree.extra.f[b])
        a, r = int(pops[at]), int(ref.pop_order[at])
        out.update(batched_node=a, host_node=r,
                   batched_f=float(f[a]), host_f=float(ref.f[r]),
                   f_gap=abs(float(f[a]) - float(ref.f[r])))
    # Node-for-node comparison of the f values both trees created before
    # the split: the largest difference shows the float noise between the
    # batch shapes.
    created = min(int(np.sum(np.asarray(batched.tree.extra.status[b]) > 0)),
                  len(ref.f))
    f_batched = np.asarray(batched.tree.extra.f[b, :created], np.float64)
    f_host = np.asarray(ref.f[:created], np.float64)
    same = np.isfinite(f_batched) & np.isfinite(f_host)
    out["max_f_difference_same_slots"] = (
        float(np.max(np.abs(f_batched - f_host)[same])) if same.any()
        else 0.0)
    return out


def lm_end_to_end(*, num_problems: int = 64, batch: int = 64,
                  host_problems: int | None = None, repeats: int = 2,
                  seed: int = 0, config: QStarConfig | None = None,
                  critics: tuple[Critic, Critic] | None = None) -> dict:
    """Runs part (b); returns its JSON section.

    Args:
      num_problems: ArithChain test problems searched by the batched run
        (a multiple of `batch`).
      batch: B, problems per batched call.
      host_problems: how many of them the host loop also searches (default
        all); agreement is measured on these.
      repeats: timed repetitions of the batched run (the best is kept, as
        for the host loop's compile-free second pass).
      seed: problem keys are fold_in(key(seed), problem index).
      config: Q* settings (default `default_config()`).
      critics: (prm, qvm); default: policy-initialised critics with random
        heads.
    """
    config = config or default_config()
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    prm, qvm = critics or (critic_from_policy(policy, seed + 1),
                           critic_from_policy(policy, seed + 2))
    models = QStarModels(policy=policy, prm=prm, qvm=qvm)
    stop = stop_rule(tokenizer)
    problems = list(task.problems("test"))[:num_problems]
    if len(problems) % batch:
        raise ValueError("num_problems must be a multiple of batch")
    host_problems = num_problems if host_problems is None else host_problems
    tokens, lengths = encode_prompts(tokenizer, task, problems, width=96)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.arange(num_problems))
    search = jax.jit(qstar_search, static_argnames="config")

    def run_batched():
        outs = []
        for s in range(0, num_problems, batch):
            outs.append(search(models, tokens[s:s + batch],
                               lengths[s:s + batch], keys[s:s + batch], stop,
                               config=config))
        return jax.block_until_ready(outs)

    t0 = time.perf_counter()
    run_batched()
    compile_s = time.perf_counter() - t0
    batched_times = []
    for _ in tqdm(range(repeats), desc="batched Q*", leave=False):
        t0 = time.perf_counter()
        outs = run_batched()
        batched_times.append(time.perf_counter() - t0)
    batched_s = min(batched_times)

    prompts = [tokens[i, :lengths[i]].tolist() for i in range(num_problems)]
    host_qstar(models, stop, config, prompts[0], keys[0])  # Compile.
    refs, t0 = [], time.perf_counter()
    for i in tqdm(range(host_problems), desc="host-loop Q*", leave=False):
        refs.append(host_qstar(models, stop, config, prompts[i], keys[i]))
    host_s = time.perf_counter() - t0

    agree, disagreements, correct_batched, correct_host = 0, [], 0, 0
    statuses = {}
    for i in range(host_problems):
        out, b = outs[i // batch], i % batch
        ref = refs[i]
        pops = np.asarray(out.pop_order[b, :int(out.num_pops[b])]).tolist()
        found = np.asarray(out.trajectories[b, :int(out.num_found[b])])
        same = pops == ref.pop_order and found.tolist() == ref.trajectories
        best = int(out.best[b])
        text_b = (tokenizer.decode(sum(trajectory_steps(out.tree, b, best),
                                       [])) if best >= 0 else "")
        text_h = (tokenizer.decode(sum(ref.steps(ref.best), []))
                  if ref.best >= 0 else "")
        correct_batched += task.reward(problems[i], text_b) == 1.0
        correct_host += task.reward(problems[i], text_h) == 1.0
        name = STATUS_NAMES[int(out.stats.status[b])]
        statuses[name] = statuses.get(name, 0) + 1
        if same:
            agree += 1
        else:
            d = _first_divergence(out, b, ref)
            d.update(problem=i, same_answer=text_b == text_h)
            disagreements.append(d)

    expansions = int(sum(int(o.stats.expansions.sum()) for o in outs))
    iterations = sum(int(o.stats.expansions.max()) for o in outs)
    flops = expansion_flops(policy, (prm, qvm), config)
    peak = max(matmul_gflops([(512, 192, 512), (8192, 192, 512),
                              (1024, 1024, 1024)]).values())
    host_per_expansion = host_s / sum(r.expansions for r in refs)
    floor = flops["total"] / (peak * 1e9)
    host_expansions = sum(r.expansions for r in refs)
    batched_rate = num_problems / batched_s
    host_rate = host_problems / host_s
    return {
        "what": "problems searched per second, Q* with the tiny policy and "
                "two policy-sized critics on ArithChain test problems; "
                "compile excluded",
        "config": {"search": vars(config.search),
                   "proposer": {"num_steps": config.proposer.num_steps,
                                "num_samples": config.proposer.num_samples,
                                "max_step_tokens":
                                    config.proposer.max_step_tokens,
                                "temperature":
                                    config.proposer.sampling.temperature},
                   "state_width": config.state_width},
        "critics": "given" if critics else "policy-initialised, random heads",
        "num_problems": num_problems, "batch": batch,
        "batched": {"seconds": batched_s, "all_seconds": batched_times,
                    "compile_seconds": compile_s,
                    "problems_per_s": batched_rate,
                    "expansions": expansions,
                    "expansions_per_s": expansions / batched_s,
                    "iterations_per_call_max": int(max(
                        int(o.stats.expansions.max()) for o in outs)),
                    "answer_accuracy": correct_batched / host_problems,
                    "status_counts": statuses},
        "host_loop": {"problems": host_problems, "seconds": host_s,
                      "problems_per_s": host_rate,
                      "expansions": host_expansions,
                      "expansions_per_s": host_expansions / host_s,
                      "seconds_per_expansion": host_s / host_expansions,
                      "answer_accuracy": correct_host / host_problems},
        "speedup_problems_per_s": batched_rate / host_rate,
        "roofline": {
            "flops_per_expansion": flops,
            "peak_matmul_gflops": peak,
            "batched_seconds_per_row_iteration":
                batched_s / (iterations * batch),
            "row_utilization": expansions / (iterations * batch),
            "compute_floor_seconds_per_expansion": floor,
            "host_seconds_per_expansion": host_per_expansion,
            "max_speedup_at_peak_full_rows": host_per_expansion / floor,
            "note": "a batched expansion cannot take less than its FLOPs "
                    "at the machine's peak matmul rate, so host seconds "
                    "per expansion / that floor bounds the speedup on this "
                    "machine",
        },
        "agreement": {"problems_compared": host_problems,
                      "identical_searches": agree,
                      "rate": agree / host_problems,
                      "disagreements": disagreements},
    }
