"""Q-value and PRM labels: hand examples and plain-loop references."""

import numpy as np
import pytest

from qstar_jax.learning.labels import (best_of_pool, fqi_targets,
                                       fqi_targets_numpy,
                                       monte_carlo_prm_labels)


def _random_transitions(seed, n=500, k=4):
    """A seeded dataset with padding, terminals and some NaN Q-values."""
    rng = np.random.default_rng(seed)
    reward = rng.normal(size=n).astype(np.float32)
    terminal = rng.random(n) < 0.2
    next_q = rng.normal(scale=3.0, size=(n, k)).astype(np.float32)
    next_valid = rng.random((n, k)) < 0.7
    next_valid[:20] = False                       # no candidate at all
    next_q[rng.random((n, k)) < 0.05] = np.nan     # diverged critic outputs
    next_q[20:30] = np.nan                        # all candidates NaN
    next_valid[20:30] = True
    return reward, terminal, next_q, next_valid


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_fqi_targets_match_numpy_loop(gamma, seed):
    data = _random_transitions(seed)
    got = fqi_targets(*data, gamma)
    want = fqi_targets_numpy(*data, gamma)
    assert got.targets.dtype == np.float32
    assert got.nan_count.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(got.targets), want.targets)
    assert int(got.nan_count) == want.nan_count > 0
    assert np.isfinite(np.asarray(got.targets)).all()


def test_fqi_targets_hand_example():
    nan = np.nan
    reward = np.array([1.0, 0.5, 0.0, 2.0, -1.0], np.float32)
    terminal = np.array([False, True, False, False, False])
    next_q = np.array([[1.0, 3.0, 9.0],      # 9.0 is padding
                       [5.0, 5.0, 5.0],      # terminal: no bootstrap
                       [nan, 2.0, -4.0],     # NaN dropped (and counted)
                       [7.0, 7.0, 7.0],      # nothing valid
                       [nan, nan, 0.0]],     # NaN padding is not counted
                      np.float32)
    next_valid = np.array([[True, True, False], [True, True, True],
                           [True, True, True], [False, False, False],
                           [True, False, True]])
    got = fqi_targets(reward, terminal, next_q, next_valid, 0.5)
    np.testing.assert_array_equal(np.asarray(got.targets),
                                  [2.5, 0.5, 1.0, 2.0, -1.0])
    assert int(got.nan_count) == 2


def test_best_of_pool_hand_example():
    nan = np.nan
    returns = np.array([[[0.2, 0.9, 5.0], [nan, 0.1, 0.3]],
                        [[1.0, 1.0, 1.0], [0.4, nan, 0.6]]], np.float32)
    valid = np.array([[[True, True, False], [True, True, True]],
                      [[False, False, False], [True, True, True]]])
    own = np.array([[0.5, 0.2], [0.25, 0.8]], np.float32)
    got = best_of_pool(returns, valid, own)
    # Row (0, 0): padding 5.0 ignored; (1, 0): nothing valid -> own return;
    # (1, 1): own return beats the pool.
    np.testing.assert_array_equal(
        np.asarray(got), np.float32([[0.9, 0.3], [0.25, 0.8]]))


def test_monte_carlo_labels_hand_example():
    returns = np.array([[[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]],
                       np.float32)
    valid = np.array([[[True, True, True, False], [True, True, False, False],
                       [False, False, False, False]]])
    soft, soft_mask = monte_carlo_prm_labels(returns, valid, "soft")
    hard, hard_mask = monte_carlo_prm_labels(returns, valid, kind="hard")
    np.testing.assert_allclose(np.asarray(soft), [[2 / 3, 0.0, 0.0]],
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(hard), [[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(soft_mask),
                                  [[True, True, False]])
    np.testing.assert_array_equal(np.asarray(hard_mask),
                                  np.asarray(soft_mask))


def test_monte_carlo_labels_unknown_kind():
    returns = np.zeros((1, 1, 2), np.float32)
    with pytest.raises(ValueError, match="'soft' or 'hard'"):
        monte_carlo_prm_labels(returns, returns > 0, kind="mean")


def _loop_labels(returns, valid, own):
    """Plain loops: best of pool, soft and hard MC labels and their mask."""
    r_, s_, _ = returns.shape
    best = np.zeros((r_, s_), np.float32)
    soft = np.zeros((r_, s_), np.float32)
    hard = np.zeros((r_, s_), np.float32)
    mask = np.zeros((r_, s_), bool)
    for r in range(r_):
        for s in range(s_):
            pool = [v for v, ok in zip(returns[r, s], valid[r, s])
                    if ok and not np.isnan(v)]
            best[r, s] = max([own[r, s]] + pool)
            if pool:
                correct = sum(v > 0.5 for v in pool)
                soft[r, s] = np.float32(correct) / np.float32(len(pool))
                hard[r, s] = float(correct > 0)
                mask[r, s] = True
    return best, soft, hard, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_and_monte_carlo_match_loops(seed):
    rng = np.random.default_rng(seed)
    shape = (7, 9, 5)
    graded = (rng.random(shape) < 0.4).astype(np.float32)
    continuous = rng.normal(size=shape).astype(np.float32)
    valid = rng.random(shape) < 0.6
    valid[0] = False
    for returns in (graded, continuous):
        returns = returns.copy()
        returns[rng.random(shape) < 0.05] = np.nan
        own = rng.normal(size=shape[:2]).astype(np.float32)
        best, soft, hard, mask = _loop_labels(returns, valid, own)
        np.testing.assert_array_equal(
            np.asarray(best_of_pool(returns, valid, own)), best)
        got_soft, got_mask = monte_carlo_prm_labels(returns, valid, "soft")
        got_hard, _ = monte_carlo_prm_labels(returns, valid, "hard")
        np.testing.assert_array_equal(np.asarray(got_soft), soft)
        np.testing.assert_array_equal(np.asarray(got_hard), hard)
        np.testing.assert_array_equal(np.asarray(got_mask), mask)


def test_value_and_outcome_labels_against_a_loop():
    from qstar_jax.learning.labels import (final_outcome_labels,
                                           outcome_value_labels)
    outcome = np.array([1.0, 0.0, 1.0])
    num_steps = np.array([3, 1, 2])
    finished = np.array([True, True, False])
    value, value_mask = outcome_value_labels(outcome, num_steps, 4)
    orm, orm_mask = final_outcome_labels(outcome, num_steps, finished, 4)
    for r in range(3):
        for t in range(4):
            exists = t < num_steps[r]
            assert value_mask[r, t] == exists
            assert value[r, t] == (outcome[r] if exists else 0.0)
            last = exists and t == num_steps[r] - 1 and finished[r]
            assert orm_mask[r, t] == last
            assert orm[r, t] == (outcome[r] if last else 0.0)
