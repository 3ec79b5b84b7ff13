"""The shipped tiny ArithChain policies (the policy and the smaller fast
rollout policy of eta-MCTS) load and match their training logs.

The assets are part of the package: a missing file fails these tests."""

import json
import math
import os

import pytest

from qstar_jax.tasks import tiny_policy
from qstar_jax.tasks.arithchain import ArithChain

ASSETS = {"policy": tiny_policy.ASSET_DIR,
          "fast_policy": tiny_policy.FAST_ASSET_DIR}
SIZES = {"policy": (1e6, 5e6), "fast_policy": (2e5, 1e6)}


@pytest.fixture(scope="module", params=sorted(ASSETS))
def shipped(request):
    path = ASSETS[request.param]
    log_path = os.path.join(path, "training_log.json")
    assert os.path.exists(log_path), f"shipped asset missing: {log_path}"
    with open(log_path) as f:
        log = json.load(f)
    model, tokenizer, task_config = tiny_policy.load_tiny_policy(path)
    return model, tokenizer, ArithChain(task_config), log, request.param


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_are_small_and_complete(name):
    for file in ("config.json", "tokenizer.json", "training_log.json",
                 tiny_policy.PARAMS_FILE):
        path = os.path.join(ASSETS[name], file)
        assert os.path.exists(path), f"shipped asset missing: {path}"
    size = os.path.getsize(os.path.join(ASSETS[name],
                                        tiny_policy.PARAMS_FILE))
    assert size < 8 * 2**20


def test_loads_with_its_config(shipped):
    model, tokenizer, task, _, name = shipped
    assert model.config.vocab_size == tokenizer.vocab_size
    lo, hi = SIZES[name]
    assert lo <= model.config.num_parameters() <= hi


def test_fast_policy_is_smaller_and_shares_the_tokenizer():
    policy, tokenizer, task = tiny_policy.load_tiny_policy()
    fast, fast_tokenizer, fast_task = tiny_policy.load_tiny_fast_policy()
    assert fast.config.num_parameters() * 3 < policy.config.num_parameters()
    assert fast_tokenizer.token_texts() == tokenizer.token_texts()
    assert fast_task == task


def test_held_out_accuracy_matches_log(shipped):
    model, tokenizer, task, log, _ = shipped
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
