"""The per-node key/value pool and the cached Q* path.

Tree attention against the plain caches it splits, the pool's path layout
against a NumPy construction, staged logits against a full prefill of the
same state, and the cached Q* against the re-encoding Q* on the benchmark's
problems (same pops, trajectories and answers).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qstar_jax.models.attention import (PrefixCache, SuffixCache,
                                        branch_attend, forked_attend,
                                        grouped_scores, grouped_values)
from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.models.kv_pool import (PoolTooLargeError, check_pool_fits,
                                      path_index, pool_bytes_per_node)
from qstar_jax.models.tree_attention import (PathKV, tree_branch_attend,
                                             tree_decode_attend)
from qstar_jax.sampling.decode import prefill
from qstar_jax.search.astar_tree import add_children
from qstar_jax.search.interfaces import Expansion
from qstar_jax.search.qstar import QStarModels, qstar_search
from qstar_jax.search.qstar_cached import (init_cached_tree,
                                           qstar_cached_search)
from qstar_jax.search.tree import state_tokens, trajectory_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from bench_search_lm import critic_from_policy, default_config  # noqa: E402

B, KV, G, HD, L = 3, 2, 3, 8, 2
P0, W, T, M = 6, 9, 5, 4


def _normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _split_and_joined(rng):
    """Random prompt/path caches and the same rows as one dense cache."""
    prompt_len = np.array([6, 1, 3])
    path_len = np.array([0, 9, 4])
    pk = [_normal(rng, B, KV, P0, HD) for _ in range(L)]
    pv = [_normal(rng, B, KV, P0, HD) for _ in range(L)]
    wk = [_normal(rng, B, KV, W, HD) for _ in range(L)]
    wv = [_normal(rng, B, KV, W, HD) for _ in range(L)]
    joined_k = np.zeros((L, B, KV, P0 + W, HD), np.float32)
    joined_v = np.zeros_like(joined_k)
    for layer in range(L):
        for b in range(B):
            p, w = prompt_len[b], path_len[b]
            for src, dst in ((pk, joined_k), (pv, joined_v)):
                dst[layer, b, :, :p] = np.asarray(src[layer])[b, :, :p]
            for src, dst in ((wk, joined_k), (wv, joined_v)):
                dst[layer, b, :, p:p + w] = np.asarray(src[layer])[b, :, :w]
    prompt = PrefixCache(k=tuple(pk), v=tuple(pv),
                         lengths=jnp.asarray(prompt_len, jnp.int32))
    path = PathKV(k=tuple(wk), v=tuple(wv),
                  lengths=jnp.asarray(path_len, jnp.int32))
    joined = PrefixCache(k=tuple(map(jnp.asarray, joined_k)),
                         v=tuple(map(jnp.asarray, joined_v)),
                         lengths=jnp.asarray(prompt_len + path_len,
                                             jnp.int32))
    return prompt, path, joined


def test_grouped_scores_and_values_against_numpy():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(B, M, KV, G, HD)).astype(np.float32)
    keys = rng.normal(size=(B, KV, W, HD)).astype(np.float32)
    weights = rng.normal(size=(B, M, KV, G, W)).astype(np.float32)
    np.testing.assert_allclose(
        grouped_scores(jnp.asarray(q), jnp.asarray(keys)),
        np.einsum("bmkgd,bkwd->bmkgw", q, keys), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        grouped_values(jnp.asarray(weights), jnp.asarray(keys)),
        np.einsum("bmkgw,bkwd->bmkgd", weights, keys), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("step", [0, 3])
def test_tree_decode_attend_equals_forked_attend_on_joined_cache(step):
    rng = np.random.default_rng(step)
    prompt, path, joined = _split_and_joined(rng)
    suffix = SuffixCache(k=tuple(_normal(rng, B, M, KV, T, HD)
                                 for _ in range(L)),
                         v=tuple(_normal(rng, B, M, KV, T, HD)
                                 for _ in range(L)))
    q = _normal(rng, B * M, 1, KV * G, HD)
    k, v = _normal(rng, B * M, 1, KV, HD), _normal(rng, B * M, 1, KV, HD)
    step = jnp.int32(step)
    for layer in range(L):
        got = tree_decode_attend(prompt, path, suffix, step)(layer, q, k, v)
        want = forked_attend(joined, suffix, step)(layer, q, k, v)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_tree_branch_attend_equals_branch_attend_on_joined_cache():
    rng = np.random.default_rng(1)
    prompt, path, joined = _split_and_joined(rng)
    q = _normal(rng, B * M, T, KV * G, HD)
    k, v = _normal(rng, B * M, T, KV, HD), _normal(rng, B * M, T, KV, HD)
    lengths = jnp.broadcast_to(joined.lengths[:, None], (B, M))
    for layer in range(L):
        got = tree_branch_attend(prompt, path, M)(layer, q, k, v)
        want = branch_attend(joined, lengths, M)(layer, q, k, v)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_path_index_lays_steps_out_densely():
    path = jnp.asarray([[0, 3, 5, -1], [0, -1, -1, -1], [0, 1, 2, 4]])
    lengths = jnp.asarray([[0, 2, 3, 0], [0, 0, 0, 0], [0, 3, 3, 3]])
    index = path_index(path, lengths, num_slots=7, max_step_tokens=3)
    want = [[3 * 3, 3 * 3 + 1, 5 * 3, 5 * 3 + 1, 5 * 3 + 2, 0, 0],
            [0] * 7,
            [3, 4, 5, 6, 7, 8, 12]]
    assert index.source.tolist() == want
    assert index.lengths.tolist() == [5, 0, 7]
    assert index.overflow.tolist() == [False, False, True]


def test_pool_bytes_and_budget_error():
    config = tiny(vocab_size=32)
    assert pool_bytes_per_node(config, 12) == 2 * 4 * 12 * 2 * 32 * 4
    total = check_pool_fits([config] * 3, batch=2, num_nodes=10,
                            max_step_tokens=12, budget_bytes=10**9)
    assert total == 3 * 2 * 10 * 24576
    with pytest.raises(PoolTooLargeError, match=r"at most N = 6 nodes"):
        check_pool_fits([config] * 3, batch=2, num_nodes=10,
                        max_step_tokens=12, budget_bytes=6 * 2 * 3 * 24576)


def _random_models(seed=0):
    policy = init_decoder(tiny(vocab_size=32), seed=seed)
    return QStarModels(policy=policy, prm=critic_from_policy(policy, 1),
                       qvm=critic_from_policy(policy, 2))


def test_staged_node_logits_equal_a_full_prefill():
    """A node three steps deep: its staged next-token logits equal the
    logits of a prefill of its whole token state."""
    models = _random_models()
    config = default_config(num_nodes=16, max_step_tokens=4,
                            state_width=40)
    prompts = jnp.asarray([[5, 6, 7, 8, 0, 0], [9, 3, 0, 0, 0, 0]])
    lengths = jnp.asarray([4, 2])
    tree = init_cached_tree(models, prompts, lengths, config=config,
                            path_slots=38)
    rng = np.random.default_rng(0)
    parent = jnp.zeros(2, jnp.int32)
    for depth in range(3):
        k = config.proposer.num_steps
        steps = jnp.asarray(rng.integers(1, 32, (2, k, 4)), jnp.int32)
        step_len = jnp.asarray(rng.integers(1, 5, (2, k)), jnp.int32)
        steps = jnp.where(jnp.arange(4) < step_len[..., None], steps, 0)
        zeros = jnp.zeros((2, k))
        expansion = Expansion(
            step_tokens=steps, step_lengths=step_len, log_probs=zeros,
            valid=jnp.ones((2, k), bool), terminal=jnp.zeros((2, k), bool),
            reward=zeros, q_value=zeros,
            generated_tokens=jnp.zeros(2, jnp.int32))
        f = jnp.asarray(rng.permutation(k), jnp.float32)[None] + depth
        tree = tree.replace(extra=tree.extra.replace(
            status=tree.extra.status.at[jnp.arange(2), parent].set(2)))
        tree, child = add_children(tree, parent, expansion, f, f, f,
                                   jnp.ones(2, bool))
        parent = tree.extra.staged.node
        assert (np.asarray(parent) == np.asarray(
            child)[np.arange(2), np.argmax(np.asarray(f[0]))]).all()
    state = state_tokens(tree, parent, config.state_width)
    _, want = prefill(models.policy, state.tokens, state.lengths)
    got = models.policy.logits(tree.extra.staged.next_hidden)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert (np.argmax(got, -1) == np.argmax(want, -1)).all()
    assert (np.asarray(tree.depth)[np.arange(2), np.asarray(parent)]
            == 3).all()


@pytest.fixture(scope="module")
def benchmark_problems():
    from qstar_jax.tasks.arithchain import ArithChain
    from qstar_jax.tasks.tiny_policy import (encode_prompts,
                                             load_tiny_policy, stop_rule)
    policy, tokenizer, task_config = load_tiny_policy()
    task = ArithChain(task_config)
    problems = list(task.problems("test"))[:8]
    tokens, lengths = encode_prompts(tokenizer, task, problems, width=96)
    models = QStarModels(policy=policy, prm=critic_from_policy(policy, 1),
                         qvm=critic_from_policy(policy, 2))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(
        jnp.arange(len(problems)))
    return dict(models=models, tokens=tokens, lengths=lengths, keys=keys,
                stop=stop_rule(tokenizer), task=task, problems=problems,
                tokenizer=tokenizer)


def test_cached_qstar_equals_reencoding_qstar(benchmark_problems):
    """The benchmark's Q* (tiny policy, policy-initialised critics, edge
    heuristic) on 8 ArithChain test problems: both paths pop the same
    nodes, find the same trajectories and give the same answers; tokens
    encoded per expansion stay below a bound that does not grow with
    depth."""
    p = benchmark_problems
    config = default_config()
    args = (p["models"], p["tokens"], p["lengths"], p["keys"], p["stop"])
    plain = jax.jit(qstar_search, static_argnames="config")(
        *args, config=config)
    # The cached path through its config flag (QStarConfig.kv_cache).
    cached = jax.jit(qstar_search, static_argnames="config")(
        *args, config=dataclasses.replace(config, kv_cache=True))
    assert cached.tree.extra.encoded_tokens is not None
    for b in range(len(p["problems"])):
        pops = int(plain.num_pops[b])
        assert int(cached.num_pops[b]) == pops
        assert (np.asarray(cached.pop_order[b, :pops])
                == np.asarray(plain.pop_order[b, :pops])).all()
        assert cached.trajectories[b].tolist() == \
            plain.trajectories[b].tolist()
        assert int(cached.best[b]) == int(plain.best[b])
        assert int(cached.stats.status[b]) == int(plain.stats.status[b])
        answers = [p["tokenizer"].decode(sum(trajectory_steps(
            r.tree, b, int(r.best[b])), [])) for r in (plain, cached)]
        assert answers[0] == answers[1]
    used = np.asarray(plain.tree.extra.status) > 0
    np.testing.assert_allclose(np.asarray(cached.tree.extra.f)[used],
                               np.asarray(plain.tree.extra.f)[used],
                               atol=1e-4, rtol=1e-5)
    prop = config.proposer
    bound = (3 * prop.max_step_tokens + prop.num_samples
             * prop.max_step_tokens + 2 * prop.num_steps
             * prop.max_step_tokens)
    expansions = np.asarray(cached.stats.expansions)
    encoded = np.asarray(cached.tree.extra.encoded_tokens)
    assert (encoded <= expansions * bound).all()
    assert (encoded >= expansions * prop.num_samples).all()
    # The batch halves (8 -> 4 rows) once at most 4 rows still run: every
    # row ends as in the full batch, pools and encoded tokens included.
    shrunk = jax.jit(qstar_search, static_argnames="config")(
        *args, config=dataclasses.replace(
            config, kv_cache=True, search=dataclasses.replace(
                config.search, shrink_rows=4)))
    assert len(set(expansions.tolist())) > 1            # rows end apart
    for name in ("pop_order", "num_pops", "trajectories", "best"):
        np.testing.assert_array_equal(getattr(shrunk, name),
                                      getattr(cached, name))
    for x, y in zip(jax.tree.leaves(shrunk.stats),
                    jax.tree.leaves(cached.stats)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(shrunk.tree.extra.encoded_tokens, encoded)
    np.testing.assert_allclose(shrunk.tree.extra.f, cached.tree.extra.f,
                               atol=1e-5, rtol=1e-5)


def test_cached_search_rejects_what_it_cannot_do(benchmark_problems):
    p = benchmark_problems
    args = (p["models"], p["tokens"], p["lengths"], p["keys"], p["stop"])
    config = default_config()
    look = dataclasses.replace(config, search=dataclasses.replace(
        config.search, heuristic="lookahead"))
    with pytest.raises(ValueError, match="heuristic='edge' only"):
        qstar_cached_search(*args, config=look)
    with pytest.raises(ValueError, match="kv_cache=True supports"):
        dataclasses.replace(look, kv_cache=True)
    with pytest.raises(ValueError, match="path_slots = 10"):
        qstar_cached_search(*args, config=config, path_slots=10)
    with pytest.raises(PoolTooLargeError, match="key/value pool"):
        qstar_cached_search(*args, config=config, pool_budget_bytes=2**20)
