"""Critics of the tiny ArithChain policy: building, saving and loading them.

A critic is described by a `CriticSpec` (its role, its backbone, whether it
reads the policy's evidence, its search-time output) and stored in a
directory:

* `params.safetensors`: every parameter, float16 (as the tiny policy; the
  shipped critic *is* these values, widened to float32 on load, and every
  logged number was measured on them);
* `config.json`: the spec, the backbone's decoder config, and whatever the
  trainer records (data, losses, command);
* `training_log.json` (shipped critics): the curve, the selected step and
  held-out metrics, with a recorded sample that
  `tests/test_shipped_critics.py` re-evaluates.

The shipped critics are in `qstar_jax/assets/tiny_critics/<name>/`;
`load_tiny_critics()` returns them by name with no training:

* 'qvm': Q(s, a) of a candidate step (probabilities; Q*'s g and h),
  trained with BCE + a pairwise ranking loss on synthetic sibling
  contrasts of the "gives" sentences, beside a token probe of the story
  (`learning.probes`) that taught its backbone who the story's person is;
  it ranks the policy's own "who gives to whom" siblings at 0.97-0.99 and
  leaves arithmetic slips to the calculator;
* 'qvm_evidence': the earlier Q(s, a), an evidence critic (it also reads
  the step's policy log-probability; `score_branches(branch_log_probs=
  ...)`), trained with BCE + a listwise ranking loss over sibling steps;
* 'value': V(s), the probability that a rollout from s ends right (eta-MCTS);
* 'orm': the probability that a finished solution is right (eta-MCTS's
  fast-rollout ORM, best-of-N reranking).

How they were trained and what they measure: README, "Sibling-trained
critics".

Example:
  >>> critics = load_tiny_critics()
  >>> qvm = critics["qvm"]        # Q(s, a), trained on sibling contrasts
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from flax import nnx

from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.critic import OUTPUTS, Critic
from qstar_jax.models.decoder import Decoder
from qstar_jax.tasks.tiny_policy import load_params_into, save_params

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets",
                         "tiny_critics")
PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
ROLES = ("prm", "qvm", "value", "orm")
BACKBONES = ("policy", "frozen", "new")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CriticSpec:
    """What a critic is.

    Attributes:
      role: 'prm' (step correctness), 'qvm' (Q(s, a)), 'value' (V(s)) or
        'orm' (outcome of a whole solution).
      backbone: 'policy' (a trainable copy of the policy's decoder),
        'frozen' (the policy's decoder, kept frozen: only the heads train)
        or 'new' (a fresh decoder of `decoder`'s config).
      evidence: also read the step's policy log-probability
        (`Critic(evidence=True)`).
      output: the search-time output, 'linear' or 'sigmoid' (a BCE-trained
        critic searched with probabilities).
      head_hidden: width of a GELU layer before the scalar head (0: a
        linear head).
      decoder: the fresh backbone's `DecoderConfig` fields ('new' only).
    """

    role: str
    backbone: str = "policy"
    evidence: bool = False
    output: str = "linear"
    head_hidden: int = 0
    decoder: dict | None = None

    def __post_init__(self):
        for name, value, allowed in (("role", self.role, ROLES),
                                     ("backbone", self.backbone, BACKBONES),
                                     ("output", self.output, OUTPUTS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; use one of {allowed}")
        if (self.backbone == "new") != (self.decoder is not None):
            raise ValueError("give a decoder config exactly when "
                             "backbone='new'")


def build_critic(spec: CriticSpec, policy: Decoder, *,
                 seed: int = 0) -> Critic:
    """A new critic for `policy` (its heads at zero).

    Args:
      spec: the critic's spec.
      policy: the policy (copied for 'policy', shared frozen for 'frozen').
      seed: initialises a 'new' backbone.
    """
    rngs = nnx.Rngs(seed)
    common = dict(evidence=spec.evidence, output="linear",
                  head_hidden=spec.head_hidden, rngs=rngs)
    if spec.backbone == "new":
        return Critic(DecoderConfig(**spec.decoder), **common)
    return Critic(backbone=nnx.clone(policy),
                  frozen_backbone=spec.backbone == "frozen", **common)


def save_critic(critic: Critic, directory: str, spec: CriticSpec,
                record: dict | None = None) -> None:
    """Writes params (float16) and config.json (spec, decoder, `record`)."""
    os.makedirs(directory, exist_ok=True)
    save_params(critic, os.path.join(directory, PARAMS_FILE),
                dtype=np.float16)
    config = {"spec": dataclasses.asdict(spec),
              "decoder": dataclasses.asdict(critic.backbone.config),
              **(record or {})}
    tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1, default=str)
    os.replace(tmp, os.path.join(directory, CONFIG_FILE))


def read_spec(directory: str) -> tuple[CriticSpec, DecoderConfig, dict]:
    """(spec, backbone decoder config, the whole config.json) of a saved
    critic."""
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        config = json.load(f)
    return (CriticSpec(**config["spec"]), DecoderConfig(**config["decoder"]),
            config)


def load_critic(directory: str) -> Critic:
    """A saved critic with its search-time output set.

    Raises:
      FileNotFoundError: no critic in `directory`.
      ValueError: the parameters do not match the config.
    """
    if not os.path.exists(os.path.join(directory, CONFIG_FILE)):
        raise FileNotFoundError(f"no critic {CONFIG_FILE} in {directory}")
    spec, decoder, _ = read_spec(directory)
    critic = Critic(decoder, evidence=spec.evidence,
                    head_hidden=spec.head_hidden, rngs=nnx.Rngs(0))
    load_params_into(critic, os.path.join(directory, PARAMS_FILE))
    critic.output = spec.output
    return critic


def round_to_stored(critic: Critic) -> Critic:
    """The critic with its parameters rounded to float16 and back, the
    values `save_critic` stores (in place)."""
    state = nnx.state(critic, nnx.Param)
    rounded = nnx.to_pure_dict(state)

    def walk(tree):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value)
            else:
                tree[key] = np.asarray(value).astype(np.float16).astype(
                    np.float32)

    walk(rounded)
    nnx.replace_by_pure_dict(state, rounded)
    nnx.update(critic, state)
    return critic


def shipped_critic_names(path: str = ASSET_DIR) -> list[str]:
    """Names of the critics shipped under `path`."""
    if not os.path.isdir(path):
        return []
    return sorted(d for d in os.listdir(path)
                  if os.path.exists(os.path.join(path, d, CONFIG_FILE)))


def load_tiny_critics(names: tuple[str, ...] | None = None,
                      path: str = ASSET_DIR) -> dict[str, Critic]:
    """The shipped ArithChain critics by name (all of them by default).

    Raises:
      FileNotFoundError: a requested critic is not shipped (the message
        lists the shipped ones).
    """
    shipped = shipped_critic_names(path)
    names = tuple(shipped) if names is None else names
    missing = [n for n in names if n not in shipped]
    if missing or not names:
        raise FileNotFoundError(f"critics {missing or 'none'} not in {path};"
                                f" shipped: {shipped}")
    return {n: load_critic(os.path.join(path, n)) for n in names}
