"""experiments/self_improve.py end to end at toy size: two rounds of Q*
with one proposal temperature per round, untrained critics (a wiring run),
and the results JSON and plot it writes."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_rounds_with_a_temperature_per_round(tmp_path):
    out = tmp_path / "results.json"
    subprocess.run([
        sys.executable, "experiments/self_improve.py", "--name", "toy",
        "--run_dir", str(tmp_path / "run"), "--results", str(out),
        "--searcher", "qstar", "--zero_critics", "true", "--critic_dir", "",
        "--prm", "qvm", "--qvm", "qvm", "--value", "value", "--orm", "orm",
        "--control", "false", "--rounds", "2", "--prompts", "4",
        "--extra_template_share", "0", "--original_share", "0",
        "--filter.critic", "value", "--filter.top_share", "0.5",
        "--sft.total_steps", "2", "--sft.warmup_steps", "1",
        "--sft.batch_size", "2", "--sft.checkpoint_every", "1",
        "--sft.log_every", "1",
        "--qstar.search.num_nodes", "8", "--qstar.search.max_expansions", "2",
        "--qstar.proposer.num_steps", "2", "--qstar.proposer.num_samples", "3",
        "--qstar.proposer.max_step_tokens", "8", "--search_batch", "4",
        "--search_temperatures", "0.3,1.0", "--eval_greedy", "4",
        "--eval_mcts", "1", "--mcts.mcts.search.num_simulations", "2"],
        cwd=ROOT, check=True, capture_output=True,
        env={**os.environ, "TQDM_DISABLE": "1"})
    with open(out) as f:
        content = json.load(f)
    assert content["config"]["search_temperatures"] == [0.3, 1.0]
    assert {"round0/greedy", "round2/greedy", "round2/mcts"} <= set(
        content["methods"])
    rounds = content["extra"]["rounds"]["search"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds[1:]:        # The top half of the finished, at most.
        assert r["prompts"] == r["searched"] == 4, r
        assert r["filter"]["kept"] <= 2, r
    assert os.path.exists(tmp_path / "results.png")
