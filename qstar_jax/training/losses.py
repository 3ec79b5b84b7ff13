"""Loss functions for the trainer, and the arrays the SFT loss consumes.

Every loss has the trainer's signature `loss_fn(model, batch) -> (loss,
metrics)`: `batch` is a dict of arrays with a leading batch axis, `loss` a
float32 scalar to minimise and `metrics` a dict of float32 scalars (averaged
over logged steps). Critic losses (`mse_loss`, `bce_loss`) take predictions
made by the caller's own model function, so they are plain array functions;
wrap them in a `loss_fn` for the trainer.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import forward_logits


def sft_loss(model: Decoder, batch: dict) -> tuple[jax.Array, dict]:
    """Masked next-token cross-entropy (policy supervised fine-tuning).

    Args:
      model: the decoder.
      batch: 'tokens' [B, L] int32 right-padded sequences, 'lengths' [B]
        int32 real tokens per row, 'loss_mask' [B, L] float32 1.0 where a
        token is a training target (the solution and its eos; 0.0 on the
        prompt and padding). Position 0 is never a target.

    Returns:
      (mean cross-entropy per target token, metrics with 'token_accuracy'
      and 'target_tokens').
    """
    tokens, mask = batch["tokens"], batch["loss_mask"][:, 1:]
    logits = forward_logits(model, tokens, batch["lengths"])[:, :-1]
    targets = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    count = jnp.maximum(mask.sum(), 1.0)
    loss = (nll * mask).sum() / count
    hit = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return loss, {"token_accuracy": (hit * mask).sum() / count,
                  "target_tokens": mask.sum()}


def mse_loss(predictions: jax.Array, targets: jax.Array,
             mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error over the entries where `mask` is 1.

    Args:
      predictions: [...] float.
      targets: [...] float, same shape.
      mask: [...] optional weights (1.0 counts, 0.0 ignored).

    Returns:
      Scalar float32.
    """
    err = jnp.square(predictions.astype(jnp.float32) - targets)
    if mask is None:
        return err.mean()
    return (err * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def bce_loss(logits: jax.Array, targets: jax.Array,
             mask: jax.Array | None = None) -> jax.Array:
    """Binary cross-entropy with logits, targets in [0, 1] (soft allowed).

    Args:
      logits: [...] float.
      targets: [...] float in [0, 1].
      mask: [...] optional weights.

    Returns:
      Scalar float32.
    """
    logits = logits.astype(jnp.float32)
    loss = (jnp.maximum(logits, 0) - logits * targets
            + jnp.log1p(jnp.exp(-jnp.abs(logits))))
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def sft_arrays(prompts: Sequence[Sequence[int]],
               targets: Sequence[Sequence[int]], *, max_len: int,
               pad_id: int = 0) -> dict[str, np.ndarray]:
    """Packs (prompt, target) id lists into the arrays `sft_loss` reads.

    Args:
      prompts: N prompt id lists (bos included if wanted).
      targets: N target id lists (eos included if wanted); trained on.
      max_len: L; a longer prompt + target raises ValueError.
      pad_id: filler after each sequence.

    Returns:
      'tokens' [N, L] int32, 'lengths' [N] int32, 'loss_mask' [N, L] float32.
    """
    n = len(prompts)
    tokens = np.full((n, max_len), pad_id, np.int32)
    mask = np.zeros((n, max_len), np.float32)
    lengths = np.zeros((n,), np.int32)
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        total = len(p) + len(t)
        if total > max_len or not p:
            raise ValueError(f"example {i}: prompt {len(p)} + target "
                             f"{len(t)} tokens does not fit max_len "
                             f"{max_len} (or the prompt is empty)")
        tokens[i, :total] = list(p) + list(t)
        mask[i, len(p):total] = 1.0
        lengths[i] = total
    return {"tokens": tokens, "lengths": lengths, "loss_mask": mask}
