"""The main job (`experiments/main.py`) end to end on tiny configs.

ArithChain: the shipped fast tiny policy with one-layer random critics on 8
test problems runs greedy, best-of-N (PRM) and Q* through the job; the
results file, the table and the PNG are checked, every row's records against
a direct `qstar_jax.solve` of the same problems, and a second run rereads
every stored chunk. GSM8K: the real GSM8K task and SmolLM2 tokenizer with a
random tiny decoder; a run stopped after its first chunk resumes to the
results of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys

import pytest

from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.results import read_results
from qstar_jax.solver import SolverModels, solve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _load_main():
    if EXPERIMENTS not in sys.path:
        sys.path.insert(0, EXPERIMENTS)
    spec = importlib.util.spec_from_file_location(
        "main_job", os.path.join(EXPERIMENTS, "main.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


main_job = _load_main()
from configs.main import default_config, scaled  # noqa: E402

rep = dataclasses.replace


def _tiny_arithchain(run_dir: str, **overrides):
    config = default_config("arithchain")
    s = config.settings
    proposer = rep(s.qstar.proposer, num_steps=2, num_samples=3)
    settings = rep(
        s, greedy=rep(s.greedy, max_tokens=48, prompt_width=80),
        best_of_n=rep(s.best_of_n, num_samples=2, max_tokens=48,
                      prompt_width=80),
        qstar=rep(s.qstar, proposer=proposer, state_width=128,
                  search=rep(s.qstar.search, num_nodes=16,
                             max_expansions=4)))
    return rep(config, problems=8, batch_size=4, chunk_size=4,
               run_dir=run_dir, settings=settings, **overrides)


@pytest.fixture(scope="module")
def arithchain_setup(random_critic):
    from qstar_jax.tasks.arithchain import ArithChain, ArithChainConfig
    from qstar_jax.tasks.tiny_policy import load_tiny_fast_policy
    policy, tokenizer, _ = load_tiny_fast_policy()
    # 2-3 steps: most of them solved within 48 tokens.
    task = ArithChain(ArithChainConfig(num_steps_min=2, num_steps_max=3))
    vocab = tokenizer.vocab_size
    models = SolverModels(policy=policy, tokenizer=tokenizer,
                          prm=random_critic(vocab, 1),
                          qvm=random_critic(vocab, 2), add_bos=True)
    return main_job.Setup(task, list(task.problems("test"))[:8], models,
                          {"policy": "tiny_fast_policy"})


def _strip_times(methods: dict) -> dict:
    drop = {"seconds", "stored_chunks"}
    return {name: {k: v for k, v in entry.items() if k not in drop}
            for name, entry in methods.items()}


def test_main_job_rows_files_and_cache(arithchain_setup, tmp_path, capsys):
    run_dir = str(tmp_path / "main")
    config = _tiny_arithchain(run_dir, methods=(
        "greedy", "best_of_n_prm", "best_of_n_orm", "qstar"))
    content, reports = main_job.run(config, arithchain_setup,
                                    progress=False)
    assert read_results(os.path.join(run_dir, "results.json")) == content
    assert os.path.getsize(os.path.join(run_dir, "accuracy.png")) > 1000
    assert list(content["methods"]) == [
        "greedy", "best-of-2 (PRM)", "Q* (PRM + QVM, 4 expansions)"]
    assert set(content["extra"]["absent"]) == {"best_of_n_orm"}
    assert content["config"]["problems"] == 8
    assert content["config"]["settings"]["qstar"]["search"][
        "max_expansions"] == 4
    task, problems, models = arithchain_setup[:3]
    rows, _ = main_job.plan_rows(config, models)
    for row in rows:   # Chunked and stored = one direct call of solve.
        direct = solve(task, problems, method=row.method, models=models,
                       config=row.config, key=config.seed,
                       batch_size=config.batch_size, progress=False)
        assert reports[row.label].records == direct.records
        entry = content["methods"][row.label]
        assert entry["accuracy"] == direct.summary["accuracy"]
        assert entry["tokens_per_problem"] == \
            direct.summary["tokens_per_problem"]
        assert entry["stored_chunks"] == 0 and entry["chunks"] == 2
    assert content["methods"]["greedy"]["accuracy"] >= 0.5   # Wired right.

    seen = []
    again, reports_again = main_job.run(
        config, arithchain_setup, progress=False,
        on_chunk=lambda row: lambda i, n, stored: seen.append(stored))
    assert seen == [True] * 6            # 3 rows of 2 chunks, all reread.
    # Stored rows: the same entries, seconds as measured when computed.
    assert _strip_times(again["methods"]) == _strip_times(content["methods"])
    for label, entry in again["methods"].items():
        assert entry["seconds"] == content["methods"][label]["seconds"]
        assert entry["stored_chunks"] == entry["chunks"] == 2
    for label, report in reports.items():
        assert reports_again[label].records == report.records
    new_seed, _ = main_job.run(rep(config, seed=1, methods=("greedy",)),
                               arithchain_setup, progress=False)
    assert new_seed["methods"]["greedy"]["stored_chunks"] == 0
    print(main_job.summary_text(again))
    out = capsys.readouterr().out
    assert "| greedy | " in out and "| Q* (PRM + QVM, 4 expansions) | " in out


def test_config_flags_and_budget():
    config = main_job.parse_config([
        "--task", "gsm8k", "--problems", "2", "--methods", "greedy,qstar",
        "--settings.qstar.search.lam", "0.5", "--budget", "2"])
    assert config.task == "gsm8k" and config.model == "smollm2"
    assert config.problems == 2 and config.methods == ("greedy", "qstar")
    assert config.settings.qstar.search.lam == 0.5
    s, doubled = config.settings, scaled(config.settings, config.budget)
    assert doubled.qstar.search.max_expansions == \
        2 * s.qstar.search.max_expansions
    assert doubled.majority_vote.num_samples == \
        2 * s.majority_vote.num_samples
    assert doubled.mcts.mcts.search.num_simulations == \
        2 * s.mcts.mcts.search.num_simulations
    assert doubled.greedy == s.greedy and scaled(s, 1.0) is s
    with pytest.raises(ValueError, match="methods"):
        main_job.parse_config(["--methods", "greedy,sorcery"])


class _Stop(Exception):
    """Stands for a kill after a stored chunk."""


def _gsm8k_setup():
    from qstar_jax.models.tokenizer import Tokenizer
    from qstar_jax.tasks.gsm8k_task import Gsm8kTask
    tokenizer = Tokenizer.from_tokenizer_json(
        os.path.join(FIXTURES, "smollm2_hf_tokenizer"))
    policy = init_decoder(tiny(
        vocab_size=tokenizer.vocab_size, num_layers=1, hidden_size=64,
        num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128),
        seed=3)
    task = Gsm8kTask(chat=tokenizer.apply_chat_template)
    return main_job.Setup(task, list(task.problems("test"))[:4],
                          SolverModels(policy=policy, tokenizer=tokenizer),
                          {"policy": "random tiny decoder"})


def test_gsm8k_run_resumes_after_a_kill(tmp_path):
    setup = _gsm8k_setup()
    config = default_config("gsm8k")
    s = config.settings
    settings = rep(s, greedy=rep(s.greedy, max_tokens=12, prompt_width=128),
                   majority_vote=rep(s.majority_vote, num_samples=2,
                                     max_tokens=12, prompt_width=128))
    config = rep(config, problems=4, batch_size=2, chunk_size=2,
                 methods=("greedy", "majority_vote"), critics="none",
                 settings=settings)

    def stop_after_first(row):
        def callback(index, count, stored):
            if row == "majority_vote" and index == 0:
                raise _Stop
        return callback

    resumed_dir = str(tmp_path / "resumed")
    with pytest.raises(_Stop):
        main_job.run(rep(config, run_dir=resumed_dir), setup,
                     on_chunk=stop_after_first, progress=False)
    assert not os.path.exists(os.path.join(resumed_dir, "results.json"))
    seen = []
    resumed, resumed_reports = main_job.run(
        rep(config, run_dir=resumed_dir), setup, progress=False,
        on_chunk=lambda row: lambda i, n, stored: seen.append(
            (row, i, stored)))
    assert seen == [("greedy", 0, True), ("greedy", 1, True),
                    ("majority_vote", 0, True),
                    ("majority_vote", 1, False)]
    whole, whole_reports = main_job.run(
        rep(config, run_dir=str(tmp_path / "whole")), setup, progress=False)
    assert _strip_times(resumed["methods"]) == _strip_times(whole["methods"])
    for label, report in whole_reports.items():
        assert resumed_reports[label].records == report.records
        assert all(r.generated_tokens > 0 for r in report.records)
    stored = json.load(open(os.path.join(
        resumed_dir, "results.json")))["extra"]["problems"]
    assert stored == [p.uid for p in setup.problems]


def test_rows_need_their_critics(arithchain_setup):
    """A row runs only with its critics; an evidence critic (it reads the
    policy's step log-probabilities) scores Q*'s branches, not whole
    sequences, so best-of-N and beam with it are absent."""
    from flax import nnx

    from qstar_jax.models.critic import Critic
    models = arithchain_setup.models
    evidence_qvm = Critic(tiny(vocab_size=models.tokenizer.vocab_size,
                               num_layers=1), evidence=True,
                          rngs=nnx.Rngs(0))
    config = rep(default_config("arithchain"), methods=(
        "greedy", "best_of_n_qvm", "best_of_n_orm", "beam", "qstar",
        "mcts"))
    rows, absent = main_job.plan_rows(
        config, rep(models, qvm=evidence_qvm))
    assert [r.row for r in rows] == ["greedy", "beam", "qstar", "mcts"]
    assert set(absent) == {"best_of_n_qvm", "best_of_n_orm"}
    assert "log-probabilities" in absent["best_of_n_qvm"]
    rows, absent = main_job.plan_rows(config, SolverModels(
        policy=models.policy, tokenizer=models.tokenizer))
    assert [r.row for r in rows] == ["greedy"]
    assert set(absent) == set(config.methods) - {"greedy"}
    # A store's key covers the weights a method reads, and only those.
    from qstar_jax.solve_store import store_key
    swapped = rep(models, prm=evidence_qvm)

    def key(method, config, models):
        return store_key(method=method, config=config, seed=0, batch_size=4,
                         chunk_size=4, problems=arithchain_setup.problems,
                         models=models)

    greedy = config.settings.greedy
    assert key("greedy", greedy, models) == key("greedy", greedy, swapped)
    bon = rep(config.settings.best_of_n, critic="prm")
    assert key("best_of_n", bon, models) != key("best_of_n", bon, swapped)
