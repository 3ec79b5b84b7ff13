"""End-to-end runs of the critic experiments on tiny configurations.

`train_critics.py` (rollouts, completions, the four critics, held-out
metrics) and `eval_search.py` (greedy, best-of-N, Q*) run as the README says,
on a handful of problems; a second run of `train_critics.py` finds every
stage on disk and reproduces the same metrics.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# train_critics.py on 8 training problems (4 of them for FQI), 4 held out.
TINY_CRITICS = ("--train-problems", "8", "--fqi-problems", "4",
                "--test-problems", "4", "--rollouts", "2", "--candidates",
                "2", "--completions", "1", "--epochs", "2", "--fqi-rounds",
                "2", "--fqi-steps", "2", "--batch-size", "4")


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, os.path.join("experiments", script),
                    *args], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.fixture(scope="module")
def critics_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("critics"))
    _run("train_critics.py", "--run-dir", run_dir, *TINY_CRITICS)
    return run_dir


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def test_train_critics_writes_every_critic_and_its_metrics(critics_dir):
    metrics = _metrics(critics_dir)
    assert metrics["data"]["train_rollouts"] == 16
    assert metrics["data"]["fqi_rollouts"] == 8
    assert metrics["data"]["test_rollouts"] == 8
    assert set(metrics["critics"]) == {"prm", "qvm_pool", "qvm_stronger",
                                       "qvm_fqi"}
    for name, m in metrics["critics"].items():
        held_out = m["vs_prefix_correct"]
        for key in ("accuracy", "ece"):
            assert 0.0 <= held_out[key] <= 1.0, (name, key)
        for key in ("precision", "recall"):   # NaN: no predicted positives.
            assert np.isnan(held_out[key]) or 0 <= held_out[key] <= 1, key
        assert os.path.exists(os.path.join(critics_dir, name,
                                           "params.safetensors"))
    with open(os.path.join(critics_dir, "prm", "history.json")) as f:
        history = json.load(f)
    # Early stopping picked one of the evaluated steps.
    evaluated = [r["step"] for r in history if "eval/auc" in r]
    assert history[-1]["selected_step"] in evaluated


def test_train_critics_rerun_resumes_every_stage(critics_dir):
    before = _metrics(critics_dir)
    stamps = {name: os.path.getmtime(os.path.join(critics_dir, name,
                                                  "params.safetensors"))
              for name in before["critics"]}
    _run("train_critics.py", "--run-dir", critics_dir, *TINY_CRITICS)
    after = _metrics(critics_dir)
    for name, stamp in stamps.items():   # No critic was trained again.
        assert os.path.getmtime(os.path.join(
            critics_dir, name, "params.safetensors")) == stamp
    np.testing.assert_equal(after, before)


def test_eval_search_rows(critics_dir, tmp_path):
    out = str(tmp_path / "eval.json")
    _run("eval_search.py", "--run-dir", critics_dir, "--out", out,
         "--problems", "4", "--batch", "4", "--n", "2", "--k", "2", "--m",
         "2", "--num-nodes", "8", "--max-expansions", "3", "--qvms",
         "qvm_stronger", "--lam", "0.5", "1")
    with open(out) as f:
        rows = json.load(f)["rows"]
    assert {"greedy", "best-of-2 (prm)", "best-of-2 (qvm_stronger)",
            "best-of-2 (majority vote)", "pass@2 (oracle)",
            "Q* (PRM + qvm_stronger, lambda=0.5)",
            "Q* (PRM + qvm_stronger, lambda=1)"} == set(rows)
    for name, row in rows.items():
        assert 0.0 <= row["accuracy"] <= 1.0, name
        assert row["tokens_per_problem"] > 0, name
    # pass@N bounds every best-of-N row.
    assert all(rows["pass@2 (oracle)"]["accuracy"] >= rows[r]["accuracy"]
               for r in rows if r.startswith("best-of-2"))
