"""Learning: Q-value and PRM labels, critic metrics, human step labels."""

from qstar_jax.learning.labels import (FqiTargets, best_of_pool, fqi_targets,
                                       fqi_targets_numpy,
                                       monte_carlo_prm_labels)
from qstar_jax.learning.metrics import (binary_metrics,
                                        expected_calibration_error,
                                        regression_metrics, roc_auc)
from qstar_jax.learning.prm800k import (Prm800kExample, Prm800kFormatError,
                                        iter_prm800k, read_prm800k,
                                        step_labels)

__all__ = [
    # labels
    "FqiTargets", "best_of_pool", "fqi_targets", "fqi_targets_numpy",
    "monte_carlo_prm_labels",
    # metrics
    "binary_metrics", "expected_calibration_error", "regression_metrics",
    "roc_auc",
    # prm800k
    "Prm800kExample", "Prm800kFormatError", "iter_prm800k", "read_prm800k",
    "step_labels",
]
