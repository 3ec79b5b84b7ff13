"""Learning: rollout datasets, Q-value and PRM labels, critic training and
metrics, human step labels."""

from qstar_jax.learning.completions import (completion_returns,
                                            stronger_solver_returns)
from qstar_jax.learning.critic_training import (FqiConfig, critic_arrays,
                                                critic_loss,
                                                fitted_q_iteration,
                                                next_q_values, step_scores,
                                                transition_arrays)
from qstar_jax.learning.labels import (FqiTargets, best_of_pool,
                                       final_outcome_labels, fqi_targets,
                                       fqi_targets_numpy,
                                       monte_carlo_prm_labels,
                                       outcome_value_labels)
from qstar_jax.learning.metrics import (binary_metrics,
                                        expected_calibration_error,
                                        regression_metrics, roc_auc)
from qstar_jax.learning.prm800k import (Prm800kExample, Prm800kFormatError,
                                        iter_prm800k, read_prm800k,
                                        step_labels)
from qstar_jax.learning.siblings import (candidate_labels,
                                         listwise_ranking_loss,
                                         pairwise_accuracy,
                                         pairwise_ranking_loss,
                                         score_siblings, sibling_arrays,
                                         sibling_loss, unpack_candidates)
from qstar_jax.learning.rollouts import (RolloutConfig, RolloutDataset,
                                         RolloutStoreError, collect_rollouts,
                                         load_rollouts, save_rollouts,
                                         transitions)

__all__ = [
    # completions
    "completion_returns", "stronger_solver_returns",
    # critic_training
    "FqiConfig", "critic_arrays", "critic_loss", "fitted_q_iteration",
    "next_q_values", "step_scores", "transition_arrays",
    # labels
    "FqiTargets", "best_of_pool", "final_outcome_labels", "fqi_targets",
    "fqi_targets_numpy", "monte_carlo_prm_labels", "outcome_value_labels",
    # metrics
    "binary_metrics", "expected_calibration_error", "regression_metrics",
    "roc_auc",
    # prm800k
    "Prm800kExample", "Prm800kFormatError", "iter_prm800k", "read_prm800k",
    "step_labels",
    # siblings
    "candidate_labels", "listwise_ranking_loss", "pairwise_accuracy",
    "pairwise_ranking_loss", "score_siblings", "sibling_arrays",
    "sibling_loss", "unpack_candidates",
    # rollouts
    "RolloutConfig", "RolloutDataset", "RolloutStoreError",
    "collect_rollouts", "load_rollouts", "save_rollouts", "transitions",
]
