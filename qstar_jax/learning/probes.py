"""Token probes: dense auxiliary labels that teach a critic's backbone what
its scalar head needs.

A sibling loss gives one bit per candidate pair, read at the candidate's
last token; the feature behind it (say, whether a story's sentence adds to
or takes from the question's quantity, which a "who gives to whom" sentence
decides only by binding a name) may sit many tokens earlier. A token probe
is a linear classifier on the critic's hidden states, trained beside the
critic at chosen tokens (each story sentence's last token, labelled with the
sentence's role) so that the backbone computes that feature where the
scalar head can reach it. The probe is a training device: the labels come
from the task's program when the training data is made, the trained critic
is saved without the probe, and nothing at search time reads either.

* `ProbedCritic`: a critic with a probe head (`nnx.Linear`, hidden -> C
  classes), one module for the trainer.
* `token_probe_loss`: softmax cross-entropy of the probe at labelled tokens.
* `with_token_probe`: a critic loss (e.g. `siblings.sibling_loss`) plus
  `weight` times the probe loss, as one trainer loss over `ProbedCritic`.
* `sentence_end_targets`: per-token targets from per-sentence labels, at
  the tokens that end each sentence of a prompt.

Shapes: R rows, L tokens, C probe classes; targets -1 where no label.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qstar_jax.models.attention import causal_attend
from qstar_jax.models.critic import Critic


class ProbedCritic(nnx.Module):
    """A critic and a linear token probe on its backbone's hidden states.

    Example:
      >>> model = ProbedCritic(critic, num_classes=4, rngs=nnx.Rngs(0))
      >>> loss = with_token_probe(sibling_loss("bce", "pairwise"), 1.0)
      >>> train(model, data, loss, config)        # data has probe_targets
      >>> trained = model.critic                  # saved without the probe
    """

    def __init__(self, critic: Critic, *, num_classes: int,
                 rngs: nnx.Rngs):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}; a probe needs >= 2")
        self.critic = critic
        self.probe = nnx.Linear(critic.backbone.config.hidden_size,
                                num_classes, rngs=rngs)

    def probe_logits(self, tokens: jax.Array,
                     lengths: jax.Array) -> jax.Array:
        """[R, L, C] float32 probe logits after every token.

        Args:
          tokens: [R, L] int32 right-padded rows.
          lengths: [R] real tokens per row.
        """
        r, l = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (r, l))
        hidden, _ = self.critic.hidden(tokens, positions,
                                       causal_attend(lengths))
        return self.probe(hidden.astype(jnp.float32))


def token_probe_loss(model: ProbedCritic, batch: dict
                     ) -> tuple[jax.Array, dict]:
    """(mean cross-entropy, metrics) of the probe at labelled tokens.

    Only the first L' tokens of each row are encoded, L' the width of
    'probe_targets' (the labels sit in the prompt, L' <= L).

    Args:
      model: the probed critic.
      batch: 'tokens' [R, L] int32, 'lengths' [R], 'probe_targets' [R, L']
        int32 (a class in [0, C), or -1: no label).

    Returns:
      The loss (0 when nothing is labelled) and {'probe_loss',
      'probe_accuracy'}.
    """
    targets = batch["probe_targets"]
    width = targets.shape[1]
    tokens = batch["tokens"][:, :width]
    lengths = jnp.minimum(batch["lengths"], width)
    logits = model.probe_logits(tokens, lengths)
    labelled = targets >= 0
    safe = jnp.where(labelled, targets, 0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits),
                               safe[..., None], axis=-1)[..., 0]
    count = jnp.maximum(labelled.sum(), 1)
    loss = jnp.where(labelled, nll, 0.0).sum() / count
    right = (logits.argmax(-1) == safe) & labelled
    return loss, {"probe_loss": loss,
                  "probe_accuracy": right.sum() / count}


def with_token_probe(critic_loss: Callable[[Critic, dict], tuple],
                     weight: float
                     ) -> Callable[[ProbedCritic, dict], tuple]:
    """`loss_fn(model, batch)` = critic_loss(model.critic, batch) + weight *
    token_probe_loss(model, batch), with both parts' metrics.

    Args:
      critic_loss: a trainer loss over a `Critic` returning (loss,
        metrics).
      weight: the probe loss's weight (> 0).
    """
    if not weight > 0:
        raise ValueError(f"weight={weight}; the probe's weight must be > 0")

    def loss_fn(model: ProbedCritic, batch: dict):
        loss, metrics = critic_loss(model.critic, batch)
        probe, probe_metrics = token_probe_loss(model, batch)
        return loss + weight * probe, {**metrics, **probe_metrics}

    return loss_fn


def sentence_end_targets(tokens: np.ndarray, prompt_lengths: np.ndarray,
                         labels: Sequence[Sequence[int]],
                         end_ids: Sequence[int]) -> np.ndarray:
    """Per-token probe targets at the tokens that end each prompt sentence.

    The k-th token of row i's prompt whose id is in `end_ids` (for example
    the ids of '.' and '?') takes labels[i][k]; every other token -1.

    Args:
      tokens: [R, L] int32 rows.
      prompt_lengths: [R] tokens of each row's prompt (ends after it are
        not sentence ends of the prompt).
      labels: R sequences, one label per sentence (-1: leave unlabelled).
      end_ids: token ids that end a sentence.

    Returns:
      [R, W] int32 targets, W = the longest prompt.

    Raises:
      ValueError: a row's prompt holds another number of sentence ends than
        it has labels.
    """
    width = int(np.max(prompt_lengths))
    out = np.full((len(tokens), width), -1, np.int32)
    for i, (row, n, row_labels) in enumerate(zip(tokens, prompt_lengths,
                                                 labels)):
        ends = np.flatnonzero(np.isin(row[:n], list(end_ids)))
        if len(ends) != len(row_labels):
            raise ValueError(f"row {i}: {len(ends)} sentence ends, "
                             f"{len(row_labels)} labels")
        out[i, ends] = row_labels
    return out
