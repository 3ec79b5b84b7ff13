"""The shipped tiny ArithChain policy loads and matches its training log.

The assets are part of the package: a missing file fails these tests."""

import json
import math
import os

import pytest

from qstar_jax.tasks import tiny_policy
from qstar_jax.tasks.arithchain import ArithChain

LOG = os.path.join(tiny_policy.ASSET_DIR, "training_log.json")


@pytest.fixture(scope="module")
def shipped():
    assert os.path.exists(LOG), f"shipped asset missing: {LOG}"
    with open(LOG) as f:
        log = json.load(f)
    model, tokenizer, task_config = tiny_policy.load_tiny_policy()
    return model, tokenizer, ArithChain(task_config), log


def test_assets_are_small_and_complete():
    for name in ("config.json", "tokenizer.json", "training_log.json",
                 tiny_policy.PARAMS_FILE):
        path = os.path.join(tiny_policy.ASSET_DIR, name)
        assert os.path.exists(path), f"shipped asset missing: {path}"
    size = os.path.getsize(os.path.join(tiny_policy.ASSET_DIR,
                                        tiny_policy.PARAMS_FILE))
    assert size < 8 * 2**20


def test_loads_with_its_config(shipped):
    model, tokenizer, task, _ = shipped
    assert model.config.vocab_size == tokenizer.vocab_size
    assert 1e6 <= model.config.num_parameters() <= 5e6


def test_held_out_accuracy_matches_log(shipped):
    model, tokenizer, task, log = shipped
    logged = log["held_out"]["test_sample"]
    lo, hi = logged["indices"]
    problems = task.problems("test")[lo:hi]
    res = tiny_policy.evaluate_policy(model, tokenizer, task, problems)
    n = res["n"]
    assert n == logged["n"] == 200
    # Same sample, greedy: the logged counts (per problem) again, up to one
    # problem flipped by a rare float tie between threadings.
    for name in ("accuracy", "all_steps_correct", "first_step_accuracy"):
        assert abs(round(res[name] * n) - round(logged[name] * n)) <= 1, (
            name, res[name], logged[name])
    assert sum(res["correct"]) == round(res["accuracy"] * n)
    # And consistent with the larger held-out evaluation (3 standard errors).
    full = log["held_out"]["eval"]
    se = math.sqrt(full["accuracy"] * (1 - full["accuracy"]) / n)
    assert abs(res["accuracy"] - full["accuracy"]) <= 3 * se + 1e-9
    # Neither trivial nor solved: search has something to repair.
    assert 0.2 <= res["all_steps_correct"] <= 0.8
