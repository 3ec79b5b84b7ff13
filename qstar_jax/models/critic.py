"""Critics: a decoder backbone plus a scalar head, read at step boundaries.

One causal forward pass over a whole trajectory gives a score after every
token, so the scores of all its steps cost one pass, not one pass per step.
The same module serves every critic of the library; what differs is where it
is read and what it was trained on:

* Q-value model (QVM): Q(s, a) = score at the last token of action a.
* Process reward model (PRM): correctness of a step = score at its last token.
* Value V(s): score at the last token of state s.
* Outcome reward model (ORM): score at the last token of a full solution.

The backbone is either the critic's own small decoder, or the policy's decoder
kept frozen (`frozen_backbone=True`: gradients stop at the hidden states and
only the head trains).

An evidence critic (`evidence=True`) also reads the policy's own signal for a
step: a second linear head on the step's summed and per-token mean
log-probability under the policy is added to the score. It scores steps
given with their log-probabilities (`score_branches(...,
branch_log_probs=...)`, the candidate steps of a search); calling it on bare
sequences raises.

Heads start at zero (every score 0 until trained), so an untrained critic
ties all candidates; tests that need distinct scores randomise the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from qstar_jax.models.attention import (PrefixCache, branch_attend,
                                        causal_attend)
from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder


OUTPUTS = ("linear", "sigmoid")


class Critic(nnx.Module):
    """Scalar scores after every token of right-padded sequences.

    Example:
      >>> critic = Critic(tiny(vocab_size=64), rngs=nnx.Rngs(0))
      >>> scores = critic(tokens, lengths)          # [N, L]
      >>> q = scores_at(critic, tokens, lengths, step_ends)  # [N, S]
    """

    def __init__(self, config: DecoderConfig | None = None, *,
                 backbone: Decoder | None = None,
                 frozen_backbone: bool = False, output: str = "linear",
                 evidence: bool = False, head_hidden: int = 0,
                 rngs: nnx.Rngs):
        if (config is None) == (backbone is None):
            raise ValueError("give exactly one of config (a new backbone) "
                             "or backbone (an existing decoder)")
        self.backbone = backbone if backbone is not None else Decoder(
            config, rngs=rngs)
        width = self.backbone.config.hidden_size
        # An optional hidden layer (GELU) before the scalar; its output
        # layer starts at zero like the linear head.
        self.adapter = (nnx.Linear(width, head_hidden, rngs=rngs)
                        if head_hidden else None)
        self.head = nnx.Linear(head_hidden or width, 1,
                               kernel_init=nnx.initializers.zeros,
                               rngs=rngs)
        self.evidence = (nnx.Linear(EVIDENCE_FEATURES, 1, use_bias=False,
                                    kernel_init=nnx.initializers.zeros,
                                    rngs=rngs) if evidence else None)
        self.frozen_backbone = frozen_backbone
        self.output = output
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} not in {OUTPUTS}")

    def hidden(self, tokens: jax.Array, positions: jax.Array,
               attend) -> tuple[jax.Array, list]:
        """Backbone hidden states (gradient-stopped if frozen) and k/v."""
        hidden, kvs = self.backbone(tokens, positions, attend)
        if self.frozen_backbone:
            hidden = jax.lax.stop_gradient(hidden)
        return hidden, kvs

    def score(self, hidden: jax.Array,
              evidence: jax.Array | None = None) -> jax.Array:
        """Head: [..., D] hidden states -> [...] float32 scores.

        Args:
          hidden: [..., D] backbone hidden states.
          evidence: [..., EVIDENCE_FEATURES] float32 (`step_evidence`),
            added through the evidence head (evidence critics only; None
            adds nothing).

        With `output='sigmoid'` the logit goes through a sigmoid (a PRM
        trained with BCE on logits, then searched with probabilities: set
        `critic.output = 'sigmoid'` after training).
        """
        hidden = hidden.astype(jnp.float32)
        if self.adapter is not None:
            hidden = jax.nn.gelu(self.adapter(hidden))
        score = self.head(hidden)[..., 0]
        if evidence is not None and self.evidence is not None:
            score = score + self.evidence(evidence)[..., 0]
        return jax.nn.sigmoid(score) if self.output == "sigmoid" else score

    def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
        """Scores after every token.

        Args:
          tokens: [N, L] int32 right-padded sequences.
          lengths: [N] real tokens per row.

        Returns:
          [N, L] float32; entries at positions >= length are meaningless.
        """
        if self.evidence is not None:
            raise ValueError(
                "an evidence critic scores steps with their policy "
                "log-probabilities: use score_branches(..., "
                "branch_log_probs=...)")
        n, l = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (n, l))
        hidden, _ = self.hidden(tokens, positions, causal_attend(lengths))
        return self.score(hidden)


EVIDENCE_FEATURES = 2
"""Features of a step's policy evidence: summed and per-token mean
log-probability."""


def step_evidence(log_probs: jax.Array, lengths: jax.Array) -> jax.Array:
    """[..., EVIDENCE_FEATURES] float32 evidence features of steps.

    Args:
      log_probs: [...] summed policy log-probability of each step
        (non-finite entries, such as missing candidates, give 0).
      lengths: [...] tokens of each step.
    """
    logp = jnp.where(jnp.isfinite(log_probs), log_probs, 0.0).astype(
        jnp.float32)
    mean = logp / jnp.maximum(lengths, 1).astype(jnp.float32)
    return jnp.stack([logp, mean], axis=-1)


def scores_at(critic: Critic, tokens: jax.Array, lengths: jax.Array,
              positions: jax.Array) -> jax.Array:
    """Scores read at given token positions (for example step ends).

    Args:
      critic: the critic.
      tokens: [N, L] int32.
      lengths: [N].
      positions: [N, S] int32 indices of the tokens to read after (the last
        token of each step); entries < 0 give 0.

    Returns:
      [N, S] float32.
    """
    scores = critic(tokens, lengths)
    picked = jnp.take_along_axis(scores, jnp.maximum(positions, 0), axis=1)
    return jnp.where(positions >= 0, picked, 0.0)


def last_token_scores(critic: Critic, tokens: jax.Array,
                      lengths: jax.Array) -> jax.Array:
    """[N] score after each row's last real token (V(s), Q(s, a), ORM)."""
    return scores_at(critic, tokens, lengths, (lengths - 1)[:, None])[:, 0]


def score_branches(critic: Critic, tokens: jax.Array, lengths: jax.Array,
                   branch_tokens: jax.Array, branch_lengths: jax.Array,
                   branch_prefix_lengths: jax.Array | None = None, *,
                   branch_log_probs: jax.Array | None = None
                   ) -> jax.Array:
    """Scores after M short branches that follow each state, in one pass.

    The states are encoded once (a causal pass over [B, P]) and the M
    branches of every state then run together on top of that cache
    (`branch_attend`), so scoring K children of a node costs P + K*T token
    passes instead of K*(P + T). The score of branch (b, m) is read at its
    last token; a branch of length 0 gets the score at its prefix's last
    token. Equal, up to float rounding, to `last_token_scores` on the
    concatenated sequences.

    Args:
      critic: the critic.
      tokens: [B, P] int32 right-padded states.
      lengths: [B] real tokens of each state.
      branch_tokens: [B, M, T] int32 the branches, right-padded.
      branch_lengths: [B, M] real tokens of each branch (0..T).
      branch_prefix_lengths: [B, M] state tokens each branch follows (default
        the whole state, `lengths`); with a whole trajectory as the state,
        branches after each of its steps share one encoding.
      branch_log_probs: [B, M] the policy's summed log-probability of each
        branch; required by an evidence critic (ignored by others).

    Returns:
      [B, M] float32.
    """
    if critic.evidence is not None and branch_log_probs is None:
        raise ValueError("an evidence critic needs branch_log_probs")
    b, p = tokens.shape
    _, m, t = branch_tokens.shape
    if branch_prefix_lengths is None:
        branch_prefix_lengths = jnp.broadcast_to(lengths[:, None], (b, m))
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    state_hidden, kvs = critic.hidden(tokens, positions,
                                      causal_attend(lengths))
    prefix = PrefixCache.from_layer_kvs(kvs, lengths)
    branch_pos = (branch_prefix_lengths[..., None]
                  + jnp.arange(t, dtype=jnp.int32)).reshape(b * m, t)
    hidden, _ = critic.hidden(
        branch_tokens.reshape(b * m, t), branch_pos,
        branch_attend(prefix, branch_prefix_lengths, m))
    last = jnp.maximum(branch_lengths - 1, 0).reshape(b * m)
    evidence = (None if critic.evidence is None else step_evidence(
        branch_log_probs, branch_lengths).reshape(b * m, -1))
    branch_scores = critic.score(hidden[jnp.arange(b * m), last], evidence)
    prefix_last = jnp.take_along_axis(
        state_hidden, (branch_prefix_lengths - 1)[..., None], axis=1)
    prefix_scores = critic.score(prefix_last)                     # [B, M]
    return jnp.where(branch_lengths > 0, branch_scores.reshape(b, m),
                     prefix_scores)
