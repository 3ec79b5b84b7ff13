"""The shipped ArithChain critics re-evaluate their recorded held-out sample.

`experiments/train_sibling_critics.py --ship` measured each critic, on its
stored float16 parameters, on the first 96 held-out test rollouts
(qstar_jax/assets/tiny_critics/heldout_sample.npz) and wrote the figures
into its training_log.json: the sibling critic's pairwise accuracy on the
labelled candidate steps, the value and outcome critics' accuracy and AUC
against the graded rollouts, and the first scores. Here the same
measurement runs again through the library and must give the same figures.
"""

import json
import os

import numpy as np
import pytest

from qstar_jax.learning import (binary_metrics, final_outcome_labels,
                                outcome_value_labels, step_scores)
from qstar_jax.learning.siblings import (pairwise_accuracy, score_siblings,
                                         unpack_candidates)
from qstar_jax.tasks.tiny_critics import ASSET_DIR, load_tiny_critics

SHIPPED = {"qvm": "siblings", "qvm_evidence": "siblings", "value": "value",
           "orm": "outcome"}
"""Shipped critic -> what its recorded sample measures."""

SIBLING_FIELDS = ("tokens", "lengths", "cand_tokens", "cand_lengths",
                  "cand_prefix", "cand_group", "cand_log_probs", "targets",
                  "mask", "row", "cand_index")


@pytest.fixture(scope="module")
def sample():
    with np.load(os.path.join(ASSET_DIR, "heldout_sample.npz")) as f:
        return dict(f)


def _recorded(name: str) -> dict:
    with open(os.path.join(ASSET_DIR, name, "training_log.json")) as f:
        return json.load(f)["heldout_sample"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_critic_rescores_its_recorded_sample(name, sample):
    critic = load_tiny_critics((name,))[name]
    recorded = _recorded(name)
    if SHIPPED[name] == "siblings":
        data = {k: sample[k] for k in SIBLING_FIELDS}
        packed = score_siblings(critic, data, batch_size=32)
        np.testing.assert_allclose(packed[0], recorded["first_scores"],
                                   atol=1e-4)
        scores = unpack_candidates(data, packed, sample["cand_valid"].shape)
        acc, pairs = pairwise_accuracy(scores, sample["labels"])
        assert pairs == recorded["pairs"] > 100
        # One pair may flip on a near-tie across machines.
        assert acc == pytest.approx(recorded["pairwise_accuracy"],
                                    abs=1.0 / pairs)
        return
    width = sample["step_ends"].shape[1]
    if SHIPPED[name] == "value":
        targets, mask = outcome_value_labels(sample["outcome"],
                                             sample["num_steps"], width)
    else:
        targets, mask = final_outcome_labels(
            sample["outcome"], sample["num_steps"], sample["finished"], width)
    scores = step_scores(critic, sample["rollout_tokens"],
                         sample["rollout_lengths"], sample["step_ends"],
                         progress=False)
    np.testing.assert_allclose(scores[0], recorded["first_scores"],
                               atol=1e-4)
    assert critic.output == "sigmoid"           # Probabilities.
    got = binary_metrics(scores[mask], targets[mask],
                         scores_are_logits=False)
    assert got["auc"] == pytest.approx(recorded["auc"], abs=1e-3)
    assert got["accuracy"] == pytest.approx(recorded["accuracy"],
                                            abs=1.0 / mask.sum())
