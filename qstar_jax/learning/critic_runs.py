"""The critics of a `train_critics.py` run: building, locating, loading.

`experiments/train_critics.py` trains a PRM and three QVMs (one per
labelling method of Q*) into a run directory, one subdirectory per critic
holding `params.safetensors` (float32). Every critic starts as a copy of
the policy's decoder with a zero head (`policy_critic`); the PRM, trained
with BCE on logits, is searched with probabilities (sigmoid output).
`eval_search.py` and `sibling_ranking.py` read such runs through
`load_run_critic`, and collect their rollouts with the same settings
(`critic_rollout_config`).

Example:
  >>> prm = load_run_critic(policy, "runs/critics", "prm")
"""

from __future__ import annotations

import os

from flax import nnx

from qstar_jax.learning.rollouts import RolloutConfig
from qstar_jax.models.critic import Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.tasks.tiny_policy import load_params_into

RUN_CRITICS = ("prm", "qvm_pool", "qvm_stronger", "qvm_fqi")
"""The critics of a run: the PRM (soft Monte Carlo labels) and the QVMs
of best-of-pool, stronger-solver and fitted-Q-iteration labels."""


def policy_critic(policy: Decoder) -> Critic:
    """A critic whose backbone starts as a copy of the policy's decoder
    (its head at zero)."""
    return Critic(backbone=nnx.clone(policy), rngs=nnx.Rngs(0))


def run_critic_path(run_dir: str, name: str) -> str:
    """Where a run keeps critic `name`'s parameters."""
    return os.path.join(run_dir, name, "params.safetensors")


def load_run_critic(policy: Decoder, run_dir: str, name: str) -> Critic:
    """A trained critic of a run (the PRM with sigmoid output).

    Raises:
      FileNotFoundError: the run has no such critic.
    """
    path = run_critic_path(run_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_run_critic: no critic {name!r} in "
                                f"{run_dir} ({path} is missing)")
    critic = load_params_into(policy_critic(policy), path)
    if name == "prm":
        critic.output = "sigmoid"
    return critic


def critic_rollout_config(*, rollouts: int, candidates: int,
                          seed: int) -> RolloutConfig:
    """The runs' rollouts: `rollouts` per problem at temperature 0.9, with
    the policy's top-`candidates` next steps (of twice as many samples)
    after every step, keyed by `seed`."""
    return RolloutConfig(
        num_rollouts=rollouts, sampling=SamplingConfig(temperature=0.9),
        max_tokens=96, prompt_width=96, max_steps=8,
        num_candidates=candidates, candidate_samples=2 * candidates,
        max_step_tokens=12, batch_size=16, state_batch_size=128,
        seed=seed)
