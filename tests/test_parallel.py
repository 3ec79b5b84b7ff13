"""Every sharding choice on 8 simulated CPU devices equals one device.

JAX fixes its device count when it starts, so each check runs in a fresh
interpreter with JAX_NUM_CPU_DEVICES=8. The workloads (random tiny Q*
networks, a few critic training steps) are in tests/scale_workloads.py.

* Search: step proposals (plain `jax.jit`) and whole Q* searches (every
  tree array, the trajectories, answers and statistics) with the batch
  split over 'data' and the models replicated or tensor-parallel over
  'model', run per device (`parallel.map_rows`) or as one partitioned
  program (`parallel.jit_rows`); each device holds only its rows' trees.
* Training: the loss curve and final parameters of data-parallel training
  with replicated, FSDP and tensor-parallel parameters; a run checkpointed
  on one mesh and layout resumes on another; `restore_params` loads a
  checkpoint onto any mesh.
"""

import os
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))

SEARCH_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from qstar_jax.parallel import (MeshConfig, jit_rows, make_mesh,
                                    map_rows, replicate, shard_rows, to_host)
    from qstar_jax.partitioning import shard_params
    from qstar_jax.sampling.proposer import propose_steps
    from qstar_jax.search import qstar_search
    from scale_workloads import assert_same, flat, search_problems

    models, tokens, lengths, keys, stop, config = search_problems(40, 8)
    propose = jax.jit(propose_steps, static_argnames="config")
    single_steps = flat("", to_host(propose(
        models.policy, tokens, lengths, keys, stop,
        config=config.proposer)))
    single = flat("", to_host(jax.jit(qstar_search, static_argnames="config")(
        models, tokens, lengths, keys, stop, config=config)))
    assert single[".best"].min() >= 0     # every problem found an answer
    assert len(set(single[".num_pops"])) > 1   # rows stop at different pops

    for data, model, layout, wrap in [(8, 1, "replicated", map_rows),
                                      (4, 2, "tensor", jit_rows)]:
        name = f"{data}x{model} {layout} {wrap.__name__}"
        mesh = make_mesh(MeshConfig(data=data, model=model))
        placed = shard_params(models, mesh, layout)
        rows = shard_rows((tokens, lengths, keys), mesh)
        q_kernel = placed.policy.layers[0].attn.q_proj.kernel[...]
        assert q_kernel.addressable_shards[0].data.shape == (
            192, 192 // model), name
        steps = propose(placed.policy, *rows, replicate(stop, mesh),
                        config=config.proposer)
        assert steps.tokens.addressable_shards[0].data.shape[0] == 8 // data
        assert_same(single_steps, flat("", to_host(steps)), name)
        if wrap is map_rows:
            search = map_rows(qstar_search, mesh, row_argnums=(1, 2, 3),
                              static_argnames=("config",))
        else:
            search = jit_rows(qstar_search, mesh, static_argnames=("config",))
        out = search(placed, *rows, replicate(stop, mesh), config=config)
        # Each 'data' group holds (and searched) only its own rows.
        parent = out.tree.parent
        assert parent.addressable_shards[0].data.shape[0] == 8 // data, name
        assert_same(single, flat("", to_host(out)), name)

    print("ok")
""")

TRAIN_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    assert jax.device_count() == 8, jax.devices()
    from qstar_jax.parallel import MeshConfig, data_mesh, make_mesh, to_host
    from qstar_jax.training.trainer import restore_params, train
    from scale_workloads import assert_same, critic_data, flat

    def run(mesh=None, layout="replicated", **options):
        critic, data, loss, config = critic_data(40, steps=6,
                                                 checkpoint_every=3)
        result = train(critic, data, loss, config, progress=False,
                       mesh=mesh, param_layout=layout, **options)
        params = nnx.state(critic, nnx.Param)
        losses = np.array([r["loss"] for r in result.history])
        return params, flat("", to_host(params)), losses

    def shard_shape(params):
        leaf = params["backbone"]["embed"]["embedding"][...]
        return leaf.addressable_shards[0].data.shape

    _, single, single_loss = run()
    assert len(single_loss) == 6 and single_loss[-1] < single_loss[0]
    choices = [(data_mesh(8), "replicated", (40, 192)),
               (make_mesh(MeshConfig(data=8)), "fsdp", (40, 24)),
               (make_mesh(MeshConfig(data=4, model=2)), "tensor", (20, 192))]
    for mesh, layout, shape in choices:
        name = f"{dict(mesh.shape)} {layout}"
        params, got, loss = run(mesh, layout)
        assert shard_shape(params) == shape, (name, shard_shape(params))
        np.testing.assert_allclose(loss, single_loss, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        assert_same(single, got, name)

    # Saved on one mesh and layout (FSDP over 8), resumed on another
    # (tensor-parallel 4 x 2), restored onto a third and onto one device.
    import tempfile
    ckpt = tempfile.mkdtemp()
    run(make_mesh(MeshConfig(data=8)), "fsdp", checkpoint_dir=ckpt,
        stop_at=3)
    tensor_mesh = make_mesh(MeshConfig(data=4, model=2))
    params, got, loss = run(tensor_mesh, "tensor", checkpoint_dir=ckpt,
                            resume=True)
    np.testing.assert_allclose(loss, single_loss[3:], rtol=1e-5, atol=1e-6)
    assert_same(single, got, "resumed on another mesh")
    for mesh, layout, shape in [(make_mesh(MeshConfig(data=2, model=4)),
                                 "tensor", (10, 192)),
                                (None, "replicated", (40, 192))]:
        critic, _, _, config = critic_data(40, steps=6, checkpoint_every=3)
        restore_params(critic, ckpt, 6, config, mesh=mesh,
                       param_layout=layout)
        restored = nnx.state(critic, nnx.Param)
        assert shard_shape(restored) == shape
        for a, b in zip(jax.tree.leaves(to_host(restored)),
                        jax.tree.leaves(to_host(params))):
            np.testing.assert_array_equal(a, b)
    print("ok")
""")


def _run_on_eight_devices(script: str) -> None:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(
                   [TESTS] + [p for p in [os.environ.get("PYTHONPATH")]
                              if p]))
    done = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().endswith("ok")


def test_search_identical_for_every_sharding_on_eight_devices():
    _run_on_eight_devices(SEARCH_SCRIPT)


def test_training_and_checkpoints_across_meshes_on_eight_devices():
    _run_on_eight_devices(TRAIN_SCRIPT)
