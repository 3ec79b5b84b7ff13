"""Part (b) of the search benchmark: Q* end to end with the tiny policy.

The same Q* (policy top-K steps, PRM rewards, QVM heuristic, A*) on the same
ArithChain test problems, run four ways in one process:

  * batched, re-encoding: `qstar_search` jitted, B problems per call; every
    expansion rebuilds the node's token state and encodes it again for the
    policy and each critic (P = state_width slots);
  * batched, cached: `qstar_cached_search`, the same search from per-node
    key/value pools (each node's step encoded once; the policy decodes and
    the critics score on top of [prompt] + [path]);
  * host loop, re-encoding: `host_qstar`, one problem at a time, a Python
    heap calling the jitted `expand_states` on one state per node (how peer
    systems and the official AlphaLLM code run search);
  * host loop, cached: `host_qstar_cached`, the same heap, expansions from
    the same per-node pool kept on device for the problem.

All use the problem's own PRNG key (`fold_in(key, i)` for its i-th
expansion), so each problem's search is the same computation in every run;
they can only part where float differences between shapes tip a sampled
token or an f tie. Every disagreement is located (first differing pop).

Cost per expansion against depth: one batched expansion (B rows, every row
expanding a node d steps deep, steps of `depth_step_tokens` tokens) timed
for d = 1, 4, 8 on both paths, with the real tokens each encodes.

Critics: PRM and QVM are critic networks with the policy's architecture,
their backbones initialised from the policy's weights (as critics are before
training) and random heads, or trained critics loaded from a directory
(`--critics`, written by the critic-training experiment).
"""

from __future__ import annotations

import dataclasses
import functools
import os
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
from qstar_jax.search.astar import (STATUS_NAMES, AStarConfig,
                                    shrink_schedule, shrink_widths)
from qstar_jax.search.astar_tree import CLOSED, add_children
from qstar_jax.search.host_loop import host_qstar, host_qstar_cached
from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.qstar import (QStarConfig, QStarModels, expand_nodes,
                                    qstar_search)
from qstar_jax.search.qstar_cached import (expand_cached, init_cached_tree,
                                           qstar_cached_search,
                                           stage_next_node)
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


def cached_expansion_flops(policy: Decoder, critics: tuple[Critic, ...],
                           config: QStarConfig, prompt_slots: int,
                           path_slots: int) -> dict:
    """Forward FLOPs of one row's cached expansion as the code runs it.

    Every model encodes the node's step (T tokens over P0 + W + T slots);
    the policy decodes M samples of T tokens over P0 + W + T slots; each
    critic encodes the K steps on top (K * T tokens over the same slots).
    """
    t = config.proposer.max_step_tokens
    m, k = config.proposer.num_samples, config.proposer.num_steps
    context = prompt_slots + path_slots + t

    def no_head(cfg):
        return cfg.flops_per_token(context) - 2 * cfg.hidden_size * \
            cfg.vocab_size

    pc = policy.config
    out = {"policy_stage": t * no_head(pc) + 2 * pc.hidden_size
           * pc.vocab_size,
           "policy_decode": m * t * pc.flops_per_token(context)}
    for i, critic in enumerate(critics):
        cc = critic.backbone.config
        out[f"critic_{i}"] = (t + k * t) * no_head(cc)
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


def _compare(out, b: int, ref) -> bool:
    """Row b of a batched result pops and finds what `ref` (a batched
    result, row b, or a host-loop `ReferenceResult`) does."""
    pops = np.asarray(out.pop_order[b, :int(out.num_pops[b])]).tolist()
    found = np.asarray(out.trajectories[b, :int(out.num_found[b])]).tolist()
    if hasattr(ref, "pop_order") and not isinstance(ref.pop_order, list):
        ref_pops = np.asarray(ref.pop_order[b, :int(ref.num_pops[b])])
        ref_found = np.asarray(ref.trajectories[b, :int(ref.num_found[b])])
        return pops == ref_pops.tolist() and found == ref_found.tolist()
    return pops == ref.pop_order and found == ref.trajectories


def _best_of(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), times


def _chain_trees(models, config, tokens, lengths, *, depth: int,
                 step_tokens: int, path_slots: int, seed: int):
    """Cached trees whose staged node is `depth` steps deep in every row:
    a chain of expansions (K children each, child 0 the best) with steps of
    `step_tokens` random tokens (the expansion's cost does not depend on
    the tokens)."""
    b = tokens.shape[0]
    k = config.proposer.num_steps
    t = config.proposer.max_step_tokens
    vocab = models.policy.config.vocab_size
    rng = np.random.default_rng(seed)
    tree = jax.jit(functools.partial(init_cached_tree, config=config,
                                     path_slots=path_slots))(
        models, tokens, lengths)
    grow = jax.jit(add_children)
    f = jnp.broadcast_to(-jnp.arange(k, dtype=jnp.float32), (b, k))
    node = jnp.zeros((b,), jnp.int32)
    for level in range(depth):
        steps = rng.integers(3, vocab, (b, k, t))
        steps[:, :, step_tokens:] = 0
        expansion = Expansion(
            step_tokens=jnp.asarray(steps, jnp.int32),
            step_lengths=jnp.full((b, k), step_tokens, jnp.int32),
            log_probs=jnp.zeros((b, k)), valid=jnp.ones((b, k), bool),
            terminal=jnp.zeros((b, k), bool), reward=jnp.zeros((b, k)),
            q_value=jnp.zeros((b, k)),
            generated_tokens=jnp.zeros((b,), jnp.int32))
        nodes = tree.extra
        tree = tree.replace(extra=nodes.replace(status=nodes.status.at[
            jnp.arange(b), node].set(CLOSED)))
        tree, child = grow(tree, node, expansion, f + level, f + level,
                           f + level, jnp.ones((b,), bool))
        node = child[:, 0]
    assert (np.asarray(tree.extra.staged.node) == np.asarray(node)).all()
    return tree, node


def cost_by_depth(models, stop, config, tokens, lengths, keys, *,
                  depths=(1, 4, 8), step_tokens: int = 8,
                  path_slots: int, repeats: int = 2) -> dict:
    """Seconds of one batched expansion (all B rows at depth d) and real
    tokens encoded per row, re-encoding against cached, for each depth."""
    reencode = jax.jit(lambda m, t, n, k: expand_nodes(m, stop, config, t,
                                                       n, k))

    @jax.jit
    def cached(m, t, n, k):
        # The cached path's whole per-expansion work: expand from the
        # staged node, then stage the next one (file a step, encode one).
        return expand_cached(m, stop, config, t, n, k), stage_next_node(t)

    out = {}
    for d in depths:
        tree, node = _chain_trees(models, config, tokens, lengths, depth=d,
                                  step_tokens=step_tokens,
                                  path_slots=path_slots, seed=d)
        args = (models, tree, node, keys)
        a = jax.block_until_ready(reencode(*args))
        c, _ = jax.block_until_ready(cached(*args))
        same = bool(np.array_equal(np.asarray(a.step_tokens),
                                   np.asarray(c.step_tokens)))
        t_re, _ = _best_of(lambda: reencode(*args), repeats)
        t_ca, _ = _best_of(lambda: cached(*args), repeats)
        state = np.asarray(lengths) + d * step_tokens
        gen = np.asarray(c.generated_tokens)
        branches = np.asarray(c.step_lengths).sum(axis=1)
        out[f"depth_{d}"] = {
            "depth": d, "state_tokens_mean": float(state.mean()),
            "reencoding_seconds_per_batched_expansion": t_re,
            "cached_seconds_per_batched_expansion": t_ca,
            "speedup": t_re / t_ca,
            "reencoding_tokens_per_expansion": float(np.mean(
                3 * state + gen + 2 * branches)),
            "cached_tokens_per_expansion": float(np.mean(
                3 * step_tokens + gen + 2 * branches)),
            "same_proposals": same,
            "load_average": list(os.getloadavg()),
        }
    return out


def _reencoding_tokens(result, prompt_lengths) -> int:
    """Real tokens the re-encoding path encodes for a finished search's
    expansions: the cached count plus 3 state prefills per expansion minus
    the 3 step encodings the cached path does instead (every expanded
    node's parent state, re-encoded by the policy and both critics)."""
    tree = result.tree
    parent = np.asarray(tree.parent)
    steps = np.asarray(tree.step_lengths)
    terminal = np.asarray(tree.terminal)
    total = int(np.asarray(tree.extra.encoded_tokens).sum())
    for b in range(parent.shape[0]):
        for node in np.asarray(result.pop_order[b, :int(result.num_pops[b])]):
            if terminal[b, node]:
                continue
            above, cur = 0, int(parent[b, node])
            while cur > 0:
                above += int(steps[b, cur])
                cur = int(parent[b, cur])
            total += 3 * (int(prompt_lengths[b]) + above)
    return total


def lm_end_to_end(*, num_problems: int = 64, batch: int = 64,
                  host_problems: int | None = None, repeats: int = 2,
                  seed: int = 0, config: QStarConfig | None = None,
                  critics: tuple[Critic, Critic] | None = None,
                  depths=(1, 4, 8), shrink_rows: int = 8,
                  shrink_ratio: float = 2 / 3) -> dict:
    """Runs part (b); returns its JSON section.

    Args:
      num_problems: ArithChain test problems searched by the batched runs
        (a multiple of `batch`).
      batch: B, problems per batched call.
      host_problems: how many of them the host loops also search (default
        all); agreement is measured on these.
      repeats: timed repetitions of each batched run and of each host
        loop (the best is kept; the batched paths alternate).
      seed: problem keys are fold_in(key(seed), problem index).
      config: Q* settings (default `default_config()`).
      critics: (prm, qvm); default: policy-initialised critics with random
        heads.
      depths: depths of the per-expansion cost measurement.
      shrink_rows: when > 0, both batched paths are also timed with
        `AStarConfig.shrink_rows` (the batch narrows as rows finish, down
        to this many rows) and compared with their full-batch runs.
      shrink_ratio: `AStarConfig.shrink_ratio` of those runs (each
        stage's width over the previous one).
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
    path_slots = config.state_width - int(np.min(np.asarray(lengths)))
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.arange(num_problems))
    searches = {
        "reencoding": jax.jit(qstar_search, static_argnames="config"),
        "cached": jax.jit(functools.partial(
            qstar_cached_search, path_slots=path_slots),
            static_argnames="config")}
    configs = dict.fromkeys(searches, config)
    if shrink_rows:
        shrunk = dataclasses.replace(config, search=dataclasses.replace(
            config.search, shrink_rows=shrink_rows,
            shrink_ratio=shrink_ratio))
        for name in list(searches):
            searches[f"{name}_shrink"] = searches[name]
            configs[f"{name}_shrink"] = shrunk

    def run(name):
        outs = []
        for s in range(0, num_problems, batch):
            outs.append(searches[name](
                models, tokens[s:s + batch], lengths[s:s + batch],
                keys[s:s + batch], stop, config=configs[name]))
        return jax.block_until_ready(outs)

    compile_s, outs = {}, {}
    for name in searches:
        t0 = time.perf_counter()
        outs[name] = run(name)
        compile_s[name] = time.perf_counter() - t0
    times = {name: [] for name in searches}
    loads = []
    for _ in tqdm(range(repeats), desc="batched Q*", leave=False):
        for name in searches:
            t0 = time.perf_counter()
            run(name)
            times[name].append(time.perf_counter() - t0)
        loads.append(list(os.getloadavg()))

    prompts = [tokens[i, :lengths[i]].tolist() for i in range(num_problems)]
    hosts = {
        "reencoding": lambda i: host_qstar(models, stop, config, prompts[i],
                                           keys[i]),
        "cached": lambda i: host_qstar_cached(
            models, stop, config, prompts[i], keys[i],
            prompt_width=tokens.shape[1], path_slots=path_slots)}
    host_s, host_all, refs = {}, {}, {}
    for name, fn in hosts.items():
        fn(0)                                               # Compile.
        for r in range(repeats):     # Best of `repeats`, like the batch.
            t0 = time.perf_counter()
            refs[name] = [fn(i) for i in tqdm(
                range(host_problems), desc=f"host loop ({name}) {r + 1}",
                leave=False)]
            host_all.setdefault(name, []).append(time.perf_counter() - t0)
        host_s[name] = min(host_all[name])
    loads.append(list(os.getloadavg()))

    agreement, correct, statuses = {}, {}, {}
    for i in range(host_problems):
        b, out_i = i % batch, i // batch
        cached, plain = outs["cached"][out_i], outs["reencoding"][out_i]
        pairs = {"cached_vs_reencoding_batched": _compare(cached, b, plain),
                 "reencoding_batched_vs_host": _compare(
                     plain, b, refs["reencoding"][i]),
                 "cached_batched_vs_cached_host": _compare(
                     cached, b, refs["cached"][i])}
        for key, same in pairs.items():
            row = agreement.setdefault(key, {"identical": 0,
                                             "disagreements": []})
            if same:
                row["identical"] += 1
            elif key == "cached_vs_reencoding_batched":
                row["disagreements"].append({"problem": i})
            else:
                ref = refs["reencoding" if "reencoding_batched" in key
                           else "cached"][i]
                d = _first_divergence(cached if "cached_batched" in key
                                      else plain, b, ref)
                d["problem"] = i
                row["disagreements"].append(d)
        for name, out in (("reencoding_batched", plain),
                          ("cached_batched", cached)):
            best = int(out.best[b])
            text = (tokenizer.decode(sum(trajectory_steps(out.tree, b, best),
                                         [])) if best >= 0 else "")
            correct[name] = correct.get(name, 0) + (
                task.reward(problems[i], text) == 1.0)
        for name, ref in (("reencoding_host", refs["reencoding"][i]),
                          ("cached_host", refs["cached"][i])):
            text = (tokenizer.decode(sum(ref.steps(ref.best), []))
                    if ref.best >= 0 else "")
            correct[name] = correct.get(name, 0) + (
                task.reward(problems[i], text) == 1.0)
        status = STATUS_NAMES[int(plain.stats.status[b])]
        statuses[status] = statuses.get(status, 0) + 1
    for row in agreement.values():
        row["rate"] = row["identical"] / host_problems
    for name in searches:
        if name.endswith("_shrink"):
            full = outs[name[:-len("_shrink")]]
            differ = [i for i in range(num_problems)
                      if not _compare(outs[name][i // batch], i % batch,
                                      full[i // batch])]
            agreement[f"{name}_vs_full_batch"] = {
                "identical": num_problems - len(differ),
                "disagreements": [{"problem": i} for i in differ],
                "rate": 1 - len(differ) / num_problems}

    expansions = int(sum(int(o.stats.expansions.sum())
                         for o in outs["cached"]))
    iterations = sum(int(o.stats.expansions.max()) for o in outs["cached"])
    # Rows computed by the shrinking runs' model calls (num_trajectories
    # = 1: a row runs for exactly its expansions).
    shrink_rows_computed = (sum(sum(shrink_schedule(
        np.asarray(o.stats.expansions),
        shrink_widths(batch, shrink_rows, shrink_ratio)))
        for o in outs["cached"]) if shrink_rows
        and config.search.num_trajectories == 1 else None)
    cached_tokens = sum(int(np.asarray(o.tree.extra.encoded_tokens).sum())
                        for o in outs["cached"])
    reencoding_tokens = sum(
        _reencoding_tokens(o, np.asarray(lengths[s * batch:(s + 1) * batch]))
        for s, o in enumerate(outs["cached"]))
    host_expansions = {name: sum(r.expansions for r in rs)
                       for name, rs in refs.items()}
    rates = {f"{name}_batched": num_problems / min(times[name])
             for name in searches}
    rates.update({f"{name}_host": host_problems / host_s[name]
                  for name in hosts})
    flops = expansion_flops(policy, (prm, qvm), config)
    cflops = cached_expansion_flops(policy, (prm, qvm), config,
                                    tokens.shape[1], path_slots)
    peak = max(matmul_gflops([(512, 192, 512), (8192, 192, 512),
                              (1024, 1024, 1024)]).values())
    depth_costs = cost_by_depth(models, stop, config, tokens[:batch],
                                lengths[:batch], keys[:batch],
                                depths=depths, path_slots=path_slots,
                                repeats=repeats)
    return {
        "what": "problems searched per second, Q* with the tiny policy and "
                "two policy-sized critics on ArithChain test problems; "
                "compile excluded; batched paths alternate in one process",
        "config": {"search": vars(config.search),
                   "proposer": {"num_steps": config.proposer.num_steps,
                                "num_samples": config.proposer.num_samples,
                                "max_step_tokens":
                                    config.proposer.max_step_tokens,
                                "temperature":
                                    config.proposer.sampling.temperature},
                   "state_width": config.state_width,
                   "truncated_steps": config.truncated_steps,
                   "prompt_slots": int(tokens.shape[1]),
                   "path_slots": path_slots},
        "critics": "given" if critics else "policy-initialised, random heads",
        "shrink_rows": shrink_rows,
        "shrink_ratio": shrink_ratio,
        "num_problems": num_problems, "batch": batch,
        "host_problems": host_problems,
        "seconds": {
            **{f"{name}_batched": min(times[name]) for name in searches},
            **{f"{name}_batched_all": times[name] for name in searches},
            **{f"{name}_host": host_s[name] for name in hosts},
            **{f"{name}_host_all": host_all[name] for name in hosts}},
        "compile_seconds": compile_s,
        "problems_per_s": rates,
        "expansions": {"batched": expansions, **{
            f"{name}_host": n for name, n in host_expansions.items()}},
        "seconds_per_expansion": {
            **{f"{name}_batched": min(times[name]) / expansions
               for name in searches},
            **{f"{name}_host": host_s[name] / host_expansions[name]
               for name in hosts}},
        "speedups": {
            "cached_batched_vs_reencoding_batched":
                rates["cached_batched"] / rates["reencoding_batched"],
            "cached_batched_vs_cached_host":
                rates["cached_batched"] / rates["cached_host"],
            "cached_batched_vs_reencoding_host":
                rates["cached_batched"] / rates["reencoding_host"],
            "reencoding_batched_vs_reencoding_host":
                rates["reencoding_batched"] / rates["reencoding_host"],
            "cached_host_vs_reencoding_host":
                rates["cached_host"] / rates["reencoding_host"],
            **({"cached_shrink_batched_vs_reencoding_batched":
                rates["cached_shrink_batched"] / rates["reencoding_batched"],
                "cached_shrink_batched_vs_reencoding_shrink_batched":
                rates["cached_shrink_batched"]
                / rates["reencoding_shrink_batched"],
                "cached_shrink_batched_vs_cached_host":
                rates["cached_shrink_batched"] / rates["cached_host"],
                "cached_shrink_vs_cached_full_batch":
                rates["cached_shrink_batched"] / rates["cached_batched"],
                "reencoding_shrink_vs_reencoding_full_batch":
                rates["reencoding_shrink_batched"]
                / rates["reencoding_batched"]} if shrink_rows else {})},
        "tokens_encoded_per_expansion": {
            "cached": cached_tokens / expansions,
            "reencoding": reencoding_tokens / expansions},
        "cost_by_depth": depth_costs,
        "answer_accuracy": {name: n / host_problems
                            for name, n in correct.items()},
        "status_counts": statuses,
        "load_average_during": loads,
        "roofline": {
            "flops_per_expansion_reencoding": flops,
            "flops_per_expansion_cached": cflops,
            "peak_matmul_gflops": peak,
            "row_utilization": expansions / (iterations * batch),
            **({"shrink_widths": shrink_widths(batch, shrink_rows,
                                               shrink_ratio),
                "shrink_row_utilization": expansions / shrink_rows_computed}
               if shrink_rows_computed else {}),
            "compute_floor_seconds_per_expansion": {
                "reencoding": flops["total"] / (peak * 1e9),
                "cached": cflops["total"] / (peak * 1e9)},
            "note": "an expansion cannot take less than its FLOPs at the "
                    "machine's peak matmul rate; the batched search also "
                    "computes the rows that have already finished "
                    "(row_utilization; shrink_row_utilization with "
                    "shrinking batches)",
        },
        "agreement": agreement,
    }
