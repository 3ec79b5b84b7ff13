"""Critic evaluation metrics (AlphaLLM Table 8 style), host-side NumPy.

Called after a jitted predict, on host arrays. `binary_metrics` scores a
critic that predicts a probability of correctness (value function, PRM,
ORM) against 0/1 or soft labels; `regression_metrics` scores a critic that
predicts a real value (a Q-value model) against its targets. Both take an
optional mask that selects the entries to score (padding is False) and
compute in float64.
"""

from __future__ import annotations

import numpy as np


def _select(arrays: dict[str, np.ndarray], mask: np.ndarray | None
            ) -> dict[str, np.ndarray]:
    """Checks equal shapes and no NaN; returns the masked 1-D float64 values.

    Args:
      arrays: name -> [N] (or any shape, all equal) array.
      mask: same shape bool, or None for all entries.

    Returns:
      name -> [M] float64, M = mask.sum().
    """
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if mask is not None:
        shapes["mask"] = np.shape(mask)
    if len(set(shapes.values())) != 1:
        raise ValueError(f"mismatched shapes: {shapes}")
    keep = (np.ones(next(iter(shapes.values())), bool) if mask is None
            else np.asarray(mask, bool))
    out = {}
    for name, a in arrays.items():
        values = np.asarray(a, np.float64)[keep]
        num_nan = int(np.isnan(values).sum())
        if num_nan:
            raise ValueError(f"{name} has {num_nan} NaN entries (of "
                             f"{values.size} selected)")
        out[name] = values
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, a tie counting as 1/2.

    AUC = P(score of a random positive > score of a random negative)
    + 1/2 P(equal), computed from average ranks in O(N log N).

    Args:
      scores: [N] float.
      positive: [N] bool.

    Returns:
      AUC in [0, 1], or NaN when only one class is present.
    """
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Average 1-based rank of each run of equal scores.
    new_run = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], scores.size]
    run_ranks = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    rank_sum = ranks[positive].sum()
    return float((rank_sum - num_pos * (num_pos + 1) / 2.0)
                 / (num_pos * num_neg))


def expected_calibration_error(probs: np.ndarray, positive: np.ndarray,
                               num_bins: int = 10) -> float:
    """ECE over `num_bins` equal-width probability bins, weighted by count.

    Bin b holds probabilities in [b / M, (b + 1) / M), the last bin also
    holds 1.0. ECE = sum_b (n_b / n) |mean(positive in b) - mean(probs in b)|.

    Args:
      probs: [N] float in [0, 1].
      positive: [N] bool outcomes.
      num_bins: M >= 1.

    Returns:
      ECE in [0, 1], NaN when N = 0.
    """
    probs = np.asarray(probs, np.float64)
    if probs.size == 0:
        return float("nan")
    bins = np.clip(np.floor(probs * num_bins).astype(np.int64), 0,
                   num_bins - 1)
    prob_sums = np.bincount(bins, weights=probs, minlength=num_bins)
    pos_sums = np.bincount(bins, weights=np.asarray(positive, np.float64),
                           minlength=num_bins)
    # n_b |mean positive - mean prob| = |sum positive - sum prob| per bin.
    return float(np.abs(pos_sums - prob_sums).sum() / probs.size)


def binary_metrics(scores: np.ndarray, labels: np.ndarray,
                   mask: np.ndarray | None = None, *, threshold: float = 0.5,
                   num_bins: int = 10, scores_are_logits: bool = False
                   ) -> dict[str, float | int]:
    """Accuracy, AUC, ECE, precision and recall of a probabilistic critic.

    Scores become probabilities p (through a sigmoid when
    `scores_are_logits`); the prediction is positive where p >= threshold
    (`threshold` is on the probability scale either way). Labels are
    binarised as label >= 0.5, so soft labels count by their majority side;
    every metric, ECE included, uses the binarised labels.

    Args:
      scores: [N] float probabilities in [0, 1] (or logits).
      labels: [N] 0/1 or soft labels in [0, 1].
      mask: [N] bool entries to score, or None for all.
      threshold: decision threshold on p.
      num_bins: equal-width bins of the ECE.
      scores_are_logits: apply a sigmoid to `scores` first.

    Returns:
      Dict: 'n' (int, scored entries) and floats 'accuracy', 'auc'
      (Mann-Whitney, NaN with one class), 'ece', 'precision' (NaN when
      nothing is predicted positive), 'recall' (NaN when no label is
      positive), 'positive_rate' (fraction of positive labels),
      'predicted_positive_rate', 'mean_score' (mean p). With n = 0 every
      rate is NaN.

    Raises:
      ValueError: mismatched shapes, NaN in the selected scores or labels,
        or probabilities outside [0, 1] when not `scores_are_logits`.
    """
    values = _select({"scores": scores, "labels": labels}, mask)
    raw, positive = values["scores"], values["labels"] >= 0.5
    if scores_are_logits:
        probs = 0.5 * (1.0 + np.tanh(0.5 * raw))  # sigmoid, overflow-free
    else:
        if raw.size and (raw.min() < 0.0 or raw.max() > 1.0):
            raise ValueError("scores must be probabilities in [0, 1] "
                             "(pass scores_are_logits=True for logits)")
        probs = raw
    n = probs.size
    predicted = probs >= threshold
    true_pos = int((predicted & positive).sum())

    def ratio(num: float, den: float) -> float:
        return float(num / den) if den else float("nan")

    return {
        "n": n,
        "accuracy": ratio((predicted == positive).sum(), n),
        "auc": roc_auc(probs, positive),
        "ece": expected_calibration_error(probs, positive, num_bins),
        "precision": ratio(true_pos, predicted.sum()),
        "recall": ratio(true_pos, positive.sum()),
        "positive_rate": ratio(positive.sum(), n),
        "predicted_positive_rate": ratio(predicted.sum(), n),
        "mean_score": ratio(probs.sum(), n),
    }


def regression_metrics(pred: np.ndarray, target: np.ndarray,
                       mask: np.ndarray | None = None
                       ) -> dict[str, float | int]:
    """MSE, MAE and Pearson correlation of predicted values.

    Args:
      pred: [N] float predictions.
      target: [N] float targets.
      mask: [N] bool entries to score, or None for all.

    Returns:
      Dict: 'n' (int) and floats 'mse', 'mae', 'pearson' (NaN when either
      side is constant or n < 2). With n = 0, mse and mae are NaN.

    Raises:
      ValueError: mismatched shapes or NaN in the selected entries.
    """
    values = _select({"pred": pred, "target": target}, mask)
    pred, target = values["pred"], values["target"]
    n = pred.size
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mse": nan, "mae": nan, "pearson": nan}
    err = pred - target
    dp, dt = pred - pred.mean(), target - target.mean()
    den = np.sqrt((dp * dp).sum() * (dt * dt).sum())
    pearson = (float(np.clip((dp * dt).sum() / den, -1.0, 1.0)) if den > 0
               else float("nan"))
    return {"n": n, "mse": float((err * err).mean()),
            "mae": float(np.abs(err).mean()), "pearson": pearson}


def wilson_interval(successes: float, n: int,
                    z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default).

    Args:
      successes: correct outcomes (may be fractional: a mean times n).
      n: trials (> 0).
      z: the normal quantile (1.959964 for 95%).

    Returns:
      (low, high) in [0, 1].
    """
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
