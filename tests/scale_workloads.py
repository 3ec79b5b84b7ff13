"""Tiny workloads shared by the scale-out tests (test_parallel.py runs
them on 8 simulated devices, test_multiprocess.py in two processes): a Q*
search with random tiny networks and a few critic training steps.

Imported by scripts that run in fresh interpreters (the device count is
fixed when JAX starts), so imports of JAX happen inside the functions.
"""

import numpy as np


def search_problems(vocab: int, batch: int):
    """(models, prompts, lengths, keys, stop, config) of a tiny Q* run."""
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
        c = Critic(tiny(vocab_size=vocab, num_layers=1), rngs=nnx.Rngs(seed))
        c.head.kernel[...] = jax.random.normal(jax.random.key(seed),
                                               c.head.kernel[...].shape)
        return c

    models = QStarModels(
        policy=init_decoder(tiny(vocab_size=vocab, num_layers=2), seed=0),
        prm=critic(1), qvm=critic(2))
    none = jnp.zeros(vocab, bool)
    stop = StopRule(none.at[jnp.asarray([5, 6, 7])].set(True),
                    none.at[2].set(True), none)
    rng = np.random.default_rng(0)
    rows = [rng.integers(8, vocab, int(n)).tolist()
            for n in rng.integers(2, 6, batch)]
    tokens, lengths = pad_states(rows, width=5)
    keys = jax.random.split(jax.random.key(3), batch)
    config = QStarConfig(
        search=AStarConfig(num_nodes=24, max_expansions=5,
                           num_trajectories=2, lam=0.5, aggregation="min"),
        proposer=ProposerConfig(num_steps=3, num_samples=4,
                                max_step_tokens=5,
                                sampling=SamplingConfig(temperature=1.0)),
        # A random network rarely ends a step within 5 tokens: a cut step
        # ends its solution, so every row finds answers at different pops.
        truncated_steps="finish", state_width=40)
    return models, tokens, lengths, keys, stop, config


def critic_data(vocab: int, steps: int = 4, **train_options):
    """(critic, data, loss, TrainConfig) of a `steps`-step critic run (16
    examples, batch 8, every step logged)."""
    from flax import nnx

    from qstar_jax.learning.critic_training import critic_arrays, critic_loss
    from qstar_jax.models.config import tiny
    from qstar_jax.models.critic import Critic
    from qstar_jax.training.trainer import TrainConfig

    rng = np.random.default_rng(1)
    tokens = rng.integers(3, vocab, (16, 12)).astype(np.int32)
    ends = np.tile(np.array([[3, 7, 11]], np.int32), (16, 1))
    data = critic_arrays(tokens, np.full(16, 12, np.int32), ends,
                         rng.random((16, 3)), np.ones((16, 3), bool))
    critic = Critic(tiny(vocab_size=vocab, num_layers=1), rngs=nnx.Rngs(0))
    config = TrainConfig(learning_rate=1e-3, warmup_steps=1,
                         total_steps=steps, batch_size=8, log_every=1,
                         **train_options)
    return critic, data, critic_loss("mse"), config


def flat(prefix: str, tree) -> dict:
    """{prefix + pytree path: numpy leaf}."""
    import jax
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(p): np.asarray(x)
            for p, x in leaves}


def assert_same(reference: dict, got: dict, name: str) -> None:
    """Integer and boolean leaves equal, float leaves within 1e-4 (float
    reduction order is all that may differ between layouts)."""
    for key in reference:
        a, b = np.asarray(reference[key]), np.asarray(got[key])
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{name}: {key}")
        else:
            np.testing.assert_array_equal(b, a, err_msg=f"{name}: {key}")
