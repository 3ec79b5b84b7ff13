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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from qstar_jax.models.attention import causal_attend
from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder


class Critic(nnx.Module):
    """Scalar scores after every token of right-padded sequences.

    Example:
      >>> critic = Critic(tiny(vocab_size=64), rngs=nnx.Rngs(0))
      >>> scores = critic(tokens, lengths)          # [N, L]
      >>> q = scores_at(critic, tokens, lengths, step_ends)  # [N, S]
    """

    def __init__(self, config: DecoderConfig | None = None, *,
                 backbone: Decoder | None = None,
                 frozen_backbone: bool = False, rngs: nnx.Rngs):
        if (config is None) == (backbone is None):
            raise ValueError("give exactly one of config (a new backbone) "
                             "or backbone (an existing decoder)")
        self.backbone = backbone if backbone is not None else Decoder(
            config, rngs=rngs)
        width = self.backbone.config.hidden_size
        self.head = nnx.Linear(width, 1, kernel_init=nnx.initializers.zeros,
                               rngs=rngs)
        self.frozen_backbone = frozen_backbone

    def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
        """Scores after every token.

        Args:
          tokens: [N, L] int32 right-padded sequences.
          lengths: [N] real tokens per row.

        Returns:
          [N, L] float32; entries at positions >= length are meaningless.
        """
        n, l = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (n, l))
        hidden, _ = self.backbone(tokens, positions, causal_attend(lengths))
        if self.frozen_backbone:
            hidden = jax.lax.stop_gradient(hidden)
        return self.head(hidden.astype(jnp.float32))[..., 0]


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
