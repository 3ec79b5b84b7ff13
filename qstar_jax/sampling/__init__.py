"""Prefill, forked decoding, sampling rules and the step proposer."""

from qstar_jax.sampling.decode import (Continuations, StopRule,
                                       forward_logits, prefill,
                                       sample_continuations,
                                       sequence_log_probs)
from qstar_jax.sampling.logits import GREEDY, SamplingConfig
from qstar_jax.sampling.proposer import (ProposerConfig, StepProposals,
                                         greedy_step, propose_steps, rollout,
                                         select_distinct)

__all__ = [
    "Continuations", "GREEDY", "ProposerConfig", "SamplingConfig",
    "StepProposals", "StopRule", "forward_logits", "greedy_step", "prefill",
    "propose_steps", "rollout", "sample_continuations", "select_distinct",
    "sequence_log_probs",
]
