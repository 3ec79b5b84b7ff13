"""Data-parallel step proposals on 4 simulated CPU devices.

JAX fixes its device count when it starts, so the check runs in a fresh
interpreter with JAX_NUM_CPU_DEVICES=4.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from qstar_jax.models.config import tiny
    from qstar_jax.models.decoder import init_decoder
    from qstar_jax.parallel import data_mesh, replicate, shard_rows
    from qstar_jax.sampling.decode import StopRule
    from qstar_jax.sampling.logits import SamplingConfig
    from qstar_jax.sampling.proposer import ProposerConfig, propose_steps

    model = init_decoder(tiny(vocab_size=40, num_layers=2), seed=0)
    stop = StopRule(jnp.zeros(40, bool).at[5].set(True),
                    jnp.zeros(40, bool).at[2].set(True), jnp.zeros(40, bool))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, 40, (8, 10)), jnp.int32)
    lengths = jnp.asarray(rng.integers(1, 11, 8), jnp.int32)
    keys = jax.random.split(jax.random.key(0), 8)
    config = ProposerConfig(num_steps=3, num_samples=6, max_step_tokens=5,
                            sampling=SamplingConfig(temperature=1.0))
    propose = jax.jit(propose_steps, static_argnames="config")
    single = propose(model, tokens, lengths, keys, stop, config=config)

    mesh = data_mesh()
    out = propose(replicate(model, mesh), *shard_rows((tokens, lengths, keys),
                  mesh), replicate(stop, mesh), config=config)
    assert len(out.tokens.sharding.device_set) == 4
    assert out.tokens.addressable_shards[0].data.shape == (2, 3, 5)
    np.testing.assert_array_equal(out.tokens, single.tokens)
    np.testing.assert_allclose(out.log_probs, single.log_probs, rtol=1e-5)
    try:
        shard_rows(tokens[:6], mesh)
        raise AssertionError("uneven batch accepted")
    except ValueError:
        pass
    print("ok")
""")


def _run_on_four_devices(script: str) -> None:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_propose_steps_sharded_over_four_devices():
    _run_on_four_devices(SCRIPT)


TRAIN_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    assert jax.device_count() == 4, jax.devices()
    from qstar_jax.learning.critic_training import critic_arrays, critic_loss
    from qstar_jax.models.config import tiny
    from qstar_jax.models.critic import Critic
    from qstar_jax.parallel import data_mesh
    from qstar_jax.training.trainer import TrainConfig, train

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 40, (16, 12)).astype(np.int32)
    lengths = np.full(16, 12, np.int32)
    ends = np.tile(np.array([[3, 7, 11]], np.int32), (16, 1))
    data = critic_arrays(tokens, lengths, ends, rng.random((16, 3)),
                         np.ones((16, 3), bool))
    config = TrainConfig(learning_rate=1e-3, warmup_steps=1, total_steps=4,
                         batch_size=8, log_every=2)

    def run(mesh):
        critic = Critic(tiny(vocab_size=40, num_layers=1), rngs=nnx.Rngs(0))
        train(critic, data, critic_loss("mse"), config, progress=False,
              mesh=mesh)
        return critic

    single, sharded = run(None), run(data_mesh())
    leaf = jax.tree.leaves(nnx.state(sharded, nnx.Param))[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    for a, b in zip(jax.tree.leaves(nnx.state(single, nnx.Param)),
                    jax.tree.leaves(nnx.state(sharded, nnx.Param))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                   atol=1e-6)
    print("ok")
""")


def test_critic_training_sharded_over_four_devices_equals_single():
    _run_on_four_devices(TRAIN_SCRIPT)
