"""Critic metrics against pairwise counts and hand computations."""

import math

import numpy as np
import pytest

from qstar_jax.learning.metrics import (binary_metrics,
                                        expected_calibration_error,
                                        regression_metrics, roc_auc)


def _pairwise_auc(scores, positive):
    """O(N^2) Mann-Whitney count: wins plus half the ties over all pairs."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0
               for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    positive = rng.random(n) < 0.3
    # Coarse scores (11 levels) so that many pairs tie.
    scores = np.round(np.clip(0.5 + 0.3 * (positive - 0.5)
                              + 0.3 * rng.normal(size=n), 0, 1), 1)
    want = _pairwise_auc(scores, positive)
    assert roc_auc(scores, positive) == pytest.approx(want, abs=1e-12)
    got = binary_metrics(scores, positive.astype(np.float32))["auc"]
    assert got == pytest.approx(want, abs=1e-12)


def test_auc_edge_cases():
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [False, True, True]) == 0.5
    assert math.isnan(roc_auc([0.2, 0.4], [True, True]))
    assert math.isnan(binary_metrics([0.2, 0.4], [0, 0])["auc"])


def test_ece_hand_computation():
    # 3 bins: [0, 1/3), [1/3, 2/3), [2/3, 1].
    probs = np.array([0.1, 0.2, 0.5, 0.6, 0.9, 1.0])
    positive = np.array([0, 1, 1, 1, 1, 0], bool)
    # bin 0: mean p 0.15, accuracy 0.5 -> |0.35| * 2
    # bin 1: mean p 0.55, accuracy 1.0 -> |0.45| * 2
    # bin 2: mean p 0.95, accuracy 0.5 -> |0.45| * 2
    want = (0.35 * 2 + 0.45 * 2 + 0.45 * 2) / 6
    got = expected_calibration_error(probs, positive, num_bins=3)
    assert got == pytest.approx(want, abs=1e-12)
    got = binary_metrics(probs, positive.astype(float), num_bins=3)["ece"]
    assert got == pytest.approx(want, abs=1e-12)
    # Perfect calibration within every bin.
    assert expected_calibration_error([0.5, 0.5], [True, False], 10) == 0.0


def test_hand_example_with_mask_and_soft_labels():
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1, 0.99])
    # Soft labels binarise at 0.5: 0.7 -> 1, 0.5 -> 1, 0.2 -> 0.
    labels = np.array([1.0, 0.2, 0.7, 0.5, 0.0, 0.0, 1.0])
    mask = np.array([True] * 6 + [False])
    m = binary_metrics(scores, labels, mask)
    # predicted: 1 1 1 0 0 0, positive: 1 0 1 1 0 0.
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["positive_rate"] == pytest.approx(0.5)
    assert m["predicted_positive_rate"] == pytest.approx(0.5)
    assert m["mean_score"] == pytest.approx(3.1 / 6)
    assert m["auc"] == pytest.approx(_pairwise_auc(scores[:6],
                                                   labels[:6] >= 0.5))
    # A higher threshold: nothing predicted positive -> precision NaN.
    m = binary_metrics(scores, labels, mask, threshold=0.95)
    assert math.isnan(m["precision"]) and m["recall"] == 0.0
    # No positive label -> recall NaN.
    assert math.isnan(binary_metrics([0.7, 0.2], [0, 0])["recall"])


def test_logits_mode_equals_probabilities():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=4.0, size=200)
    logits[:3] = [-800.0, 800.0, 0.0]          # no overflow warnings
    labels = (rng.random(200) < 0.5).astype(np.float32)
    probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500)))
    from_logits = binary_metrics(logits, labels, scores_are_logits=True,
                                 num_bins=5)
    from_probs = binary_metrics(probs, labels, num_bins=5)
    assert from_logits.keys() == from_probs.keys()
    for key in from_probs:
        assert from_logits[key] == pytest.approx(from_probs[key], abs=1e-12)
    with pytest.raises(ValueError, match="scores_are_logits"):
        binary_metrics(logits, labels)


def test_errors():
    with pytest.raises(ValueError, match="2 NaN"):
        binary_metrics([0.1, np.nan, np.nan], [0, 1, 1])
    # A NaN outside the mask is not scored.
    m = binary_metrics([0.1, np.nan, 0.8], [0, 1, 1], [True, False, True])
    assert m["n"] == 2 and m["accuracy"] == 1.0
    with pytest.raises(ValueError, match="mismatched shapes"):
        binary_metrics([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="mismatched shapes"):
        binary_metrics([0.1, 0.2], [0, 1], [True])
    with pytest.raises(ValueError, match="1 NaN"):
        regression_metrics([0.0, 1.0], [np.nan, 1.0])
    m = binary_metrics([0.5], [1], [False])
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["ece"])


def test_regression_metrics():
    pred = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    target = np.array([1.5, 2.0, 2.0, 5.0, 0.0])
    mask = np.array([True, True, True, True, False])
    m = regression_metrics(pred, target, mask)
    assert m["n"] == 4
    assert m["mse"] == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert m["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert m["pearson"] == pytest.approx(
        np.corrcoef(pred[:4], target[:4])[0, 1], abs=1e-12)
    assert regression_metrics([1.0, 2.0], [3.0, 5.0])["pearson"] == 1.0
    assert math.isnan(regression_metrics([1.0, 2.0], [3.0, 3.0])["pearson"])
    assert math.isnan(regression_metrics([1.0], [2.0])["pearson"])
    assert math.isnan(regression_metrics([], [])["mse"])


def test_wilson_interval_matches_the_closed_form_values():
    from qstar_jax.learning.metrics import wilson_interval
    # Known values (Wilson 1927; e.g. Newcombe 1998, Table I: 81/263).
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
