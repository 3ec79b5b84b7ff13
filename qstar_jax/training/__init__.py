"""Training: the general trainer, its losses, the SFT data layout and its
TensorBoard logs."""

from qstar_jax.training.losses import bce_loss, mse_loss, sft_arrays, sft_loss
from qstar_jax.training.tensorboard import ScalarLog, read_scalars
from qstar_jax.training.trainer import (TrainConfig, TrainResult,
                                        batch_indices, learning_rate_schedule,
                                        make_optimizer, restore_checkpoint,
                                        restore_params, save_checkpoint,
                                        tensorboard_dir, train)

__all__ = [
    "ScalarLog", "TrainConfig", "TrainResult", "batch_indices", "bce_loss",
    "learning_rate_schedule", "make_optimizer", "mse_loss", "read_scalars",
    "restore_checkpoint", "restore_params", "save_checkpoint", "sft_arrays",
    "sft_loss", "tensorboard_dir", "train",
]
