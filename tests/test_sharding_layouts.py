"""Parameter layouts, meshes and placement checks that need one device.

The layouts' partition specs are computed on abstract meshes; the tensor
layout's splits are checked against the algebra they rely on (each
'model' shard computes its own heads and SwiGLU units from its slices of
the weights, and the shards' outputs add up to the layer's output); the
8-device and two-process checks are in test_parallel.py and
test_multiprocess.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from qstar_jax.distributed import DistributedConfig
from qstar_jax.models.attention import causal_attend
from qstar_jax.models.config import tiny
from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import apply_rotary, init_decoder, rotary_tables
from qstar_jax.parallel import (MeshConfig, data_mesh, jit_rows, make_mesh,
                                map_rows, shard_rows, to_host)
from qstar_jax.partitioning import (bytes_per_device, fsdp_spec, param_specs,
                                    path_names, shard_params)


def _mesh(data, model=None):
    if model is None:
        return AbstractMesh((data,), ("data",), axis_types=(AxisType.Auto,))
    return AbstractMesh((data, model), ("data", "model"),
                        axis_types=(AxisType.Auto,) * 2)


def _named_specs(tree, mesh, layout):
    specs = param_specs(tree, mesh, layout)
    return {".".join(path_names(p)): s for p, s in
            jax.tree_util.tree_flatten_with_path(specs)[0]}


def test_tensor_layout_specs_of_a_critic():
    critic = Critic(tiny(vocab_size=40, num_layers=1), rngs=nnx.Rngs(0))
    specs = _named_specs(nnx.state(critic, nnx.Param), _mesh(2, 2),
                         "tensor")
    block = "backbone.layers.attn."
    expected = {
        "backbone.embed.embedding": P("model", None),
        block + "q_proj.kernel": P(None, "model"),
        block + "k_proj.kernel": P(None, "model"),
        block + "v_proj.kernel": P(None, "model"),
        block + "o_proj.kernel": P("model", None),
        "backbone.layers.mlp.gate_proj.kernel": P(None, "model"),
        "backbone.layers.mlp.up_proj.kernel": P(None, "model"),
        "backbone.layers.mlp.down_proj.kernel": P("model", None),
    }
    for name, spec in specs.items():
        assert spec == expected.get(name, P()), name
    assert set(expected) <= set(specs)
    assert specs["head.kernel"] == P() and specs[
        "backbone.final_norm.weight"] == P()


def _split(w, spec, shard, parts):
    """The `shard`-th of `parts` contiguous blocks of w along the axis that
    `spec` puts on 'model'."""
    axis = list(spec).index("model")
    return np.split(np.asarray(w), parts, axis=axis)[shard]


def test_tensor_shards_compute_attention_and_mlp_independently():
    """Each 'model' shard's slices of q/k/v (output features) and o (input
    features) give that shard's heads, GQA groups included; the shards'
    partial outputs sum to the attention output; the same for SwiGLU."""
    parts = 2
    model = init_decoder(tiny(vocab_size=40, num_layers=1), seed=3)
    block = model.layers[0]
    specs = {".".join(path_names(p)): s for p, s in
             jax.tree_util.tree_flatten_with_path(param_specs(
                 nnx.state(block, nnx.Param), _mesh(1, parts),
                 "tensor"))[0]}
    l, cfg = 7, model.config
    x = jax.random.normal(jax.random.key(0), (1, l, cfg.hidden_size))
    cos, sin = rotary_tables(jnp.arange(l)[None], cfg.head_dim,
                             cfg.rope_theta)
    attend = causal_attend(jnp.array([l]))
    full, _ = block.attn(x, cos, sin, lambda q, k, v: attend(0, q, k, v))

    w = {name: block.attn.__getattribute__(name).kernel[...]
         for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    heads, kv_heads = cfg.num_heads // parts, cfg.num_kv_heads // parts
    total = 0
    for s in range(parts):
        q, k, v = (jnp.asarray(np.asarray(x) @ _split(
            w[n], specs[f"attn.{n}.kernel"], s, parts)).reshape(
                1, l, h, cfg.head_dim)
            for n, h in (("q_proj", heads), ("k_proj", kv_heads),
                         ("v_proj", kv_heads)))
        out = attend(0, apply_rotary(q, cos, sin), apply_rotary(k, cos, sin),
                     v).reshape(1, l, heads * cfg.head_dim)
        total = total + np.asarray(out) @ _split(
            w["o_proj"], specs["attn.o_proj.kernel"], s, parts)
    np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-6)

    mlp = block.mlp
    full = mlp(x)
    total = 0
    for s in range(parts):
        gate = np.asarray(x) @ _split(mlp.gate_proj.kernel[...],
                                      specs["mlp.gate_proj.kernel"], s, parts)
        up = np.asarray(x) @ _split(mlp.up_proj.kernel[...],
                                    specs["mlp.up_proj.kernel"], s, parts)
        hidden = gate / (1 + np.exp(-gate)) * up
        total = total + hidden @ _split(
            mlp.down_proj.kernel[...], specs["mlp.down_proj.kernel"], s,
            parts)
    np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,size,spec", [
    ((40, 192), 8, P(None, "data")),     # the larger divisible axis
    ((48, 40), 8, P("data", None)),
    ((16, 16), 4, P("data", None)),      # ties: the first axis
    ((192,), 8, P("data")),
    ((7, 5), 2, P()),                    # nothing divides: replicated
    ((1,), 8, P()),
    ((), 8, P()),
    ((40, 192), 1, P()),
])
def test_fsdp_spec(shape, size, spec):
    assert fsdp_spec(shape, size) == spec


def test_fsdp_optimizer_moments_follow_their_parameters():
    critic = Critic(tiny(vocab_size=40, num_layers=1), rngs=nnx.Rngs(0))
    params = nnx.state(critic, nnx.Param)
    opt_state = optax.adamw(1e-3).init(params)
    specs = param_specs((params, opt_state), _mesh(8), "fsdp")
    param_specs_only = jax.tree.leaves(specs[0])
    mu = jax.tree.leaves(specs[1][0].mu)
    nu = jax.tree.leaves(specs[1][0].nu)
    assert mu == param_specs_only and nu == param_specs_only
    assert specs[1][0].count == P()
    assert P(None, "data") in param_specs_only


def test_bytes_per_device():
    tree = {"w": np.zeros((40, 192), np.float32),
            "b": np.zeros((3,), np.float32)}
    mesh = _mesh(8)
    assert bytes_per_device(tree, mesh, "replicated") == (40 * 192 + 3) * 4
    assert bytes_per_device(tree, mesh, "fsdp") == (40 * 24 + 3) * 4


def test_layout_errors_name_the_problem():
    critic = Critic(tiny(vocab_size=40, num_layers=1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="layout 'pipeline'"):
        param_specs(critic, _mesh(2, 2), "pipeline")
    with pytest.raises(ValueError, match="needs a 'model' mesh axis"):
        param_specs(critic, _mesh(8), "tensor")
    with pytest.raises(ValueError, match=r"num_heads=6 does not divide"):
        param_specs(critic, _mesh(2, 4), "tensor")
    raw = {"attn": {"q_proj": {"kernel": np.zeros((4, 6))}}}
    with pytest.raises(ValueError, match=r"attn.q_proj.kernel of shape"):
        param_specs(raw, _mesh(1, 4), "tensor")


def test_mesh_and_placement_errors():
    with pytest.raises(ValueError, match="MeshConfig"):
        MeshConfig(data=-1)
    with pytest.raises(ValueError, match="MeshConfig"):
        MeshConfig(model=0)
    n = jax.device_count()
    with pytest.raises(ValueError, match="make_mesh: data="):
        make_mesh(MeshConfig(data=n + 1))
    with pytest.raises(ValueError, match="do not split into groups"):
        make_mesh(MeshConfig(model=n + 1))
    with pytest.raises(ValueError, match="data_mesh"):
        data_mesh(n + 1)
    with pytest.raises(ValueError, match="shard_rows"):
        shard_rows(np.zeros((6, 3)), _mesh(4, 2))
    with pytest.raises(ValueError, match="shard_rows"):
        shard_rows(np.float32(1.0), _mesh(1, 1))
    with pytest.raises(ValueError, match="map_rows: the mesh has 2 'model'"):
        map_rows(lambda x: x, _mesh(4, 2), row_argnums=(0,))
    one = make_mesh(MeshConfig(data=1))
    with pytest.raises(ValueError, match=r"jit_rows: output \['total'\]"):
        jit_rows(lambda x: {"rows": x, "total": x.sum()}, one)(np.ones(4))


def test_placement_round_trip_on_one_device():
    mesh = make_mesh(MeshConfig(data=1))
    keys = jax.random.split(jax.random.key(7), 4)
    tokens = np.arange(12, dtype=np.int32).reshape(4, 3)
    placed_keys, placed_tokens = shard_rows((keys, tokens), mesh)
    assert jax.dtypes.issubdtype(placed_keys.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        jax.random.key_data(placed_keys), jax.random.key_data(keys))
    np.testing.assert_array_equal(to_host(placed_tokens), tokens)
    on_device = shard_rows(jnp.asarray(tokens), mesh)
    np.testing.assert_array_equal(to_host(on_device), tokens)
    np.testing.assert_array_equal(to_host(placed_keys),
                                  jax.random.key_data(keys))
    # Sampling with placed keys draws what the original keys draw.
    np.testing.assert_array_equal(
        jax.vmap(jax.random.uniform)(placed_keys),
        jax.vmap(jax.random.uniform)(keys))
    model = init_decoder(tiny(vocab_size=40, num_layers=1), seed=0)
    placed = shard_params(model, mesh, "fsdp")
    for a, b in zip(jax.tree.leaves(nnx.state(placed)),
                    jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(a, b)


def test_distributed_config_from_env():
    config = DistributedConfig.from_env({
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
        "JAX_LOCAL_DEVICE_IDS": "0,1"})
    assert config == DistributedConfig(
        coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
        local_device_ids=(0, 1))
    assert DistributedConfig.from_env({}) == DistributedConfig()
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        DistributedConfig.from_env({"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match="JAX_LOCAL_DEVICE_IDS"):
        DistributedConfig.from_env({"JAX_LOCAL_DEVICE_IDS": "0;1"})
    with pytest.raises(ValueError, match="process_id must be in"):
        DistributedConfig(num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="cpu_collectives"):
        DistributedConfig(cpu_collectives="nccl")
