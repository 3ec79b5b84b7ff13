"""Training: the general trainer, its losses and the SFT data layout."""

from qstar_jax.training.losses import bce_loss, mse_loss, sft_arrays, sft_loss
from qstar_jax.training.trainer import (TrainConfig, TrainResult,
                                        batch_indices, learning_rate_schedule,
                                        make_optimizer, restore_checkpoint,
                                        restore_params, save_checkpoint,
                                        train)

__all__ = [
    "TrainConfig", "TrainResult", "batch_indices", "bce_loss",
    "learning_rate_schedule", "make_optimizer", "mse_loss",
    "restore_checkpoint", "restore_params", "save_checkpoint", "sft_arrays",
    "sft_loss", "train",
]
