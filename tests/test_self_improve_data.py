"""experiments/self_improve_data.py on a hand-made round: the selections it
trains on, the counts it reports, and rows kept across runs."""

import json
import os
import subprocess
import sys

from qstar_jax.learning import imagination as im
from qstar_jax.learning.self_improve import write_trajectories
from qstar_jax.learning.trajectory_filter import Trajectory, search_prompts
from qstar_jax.solver import GreedyConfig, SolverModels
from qstar_jax.tasks.arithchain import ArithChain
from qstar_jax.tasks.tiny_policy import load_tiny_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "experiments/self_improve_data.py",
                    *args], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "TQDM_DISABLE": "1"})


def test_selections_counts_and_merged_rows(tmp_path):
    policy, tokenizer, config = load_tiny_policy()
    task = ArithChain(config)
    imagined = im.arithchain_variations((im.ArithChainVariation(),), 6,
                                        seed=3, reference=config)
    round_dir = str(tmp_path / "round_1")
    im.write_imagined(round_dir, imagined)
    # Prompts 0-2 searched right (their answer key), 3-5 wrong; 0-3 kept.
    searched = []
    for i, p in enumerate(imagined.prompts):
        answer = imagined.answers[p.uid] if i < 3 else "100000"
        searched.append(Trajectory(uid=p.uid, question=p.question,
                                   text=f"1 + 1 = 2\n#### {answer}",
                                   finished=True, answer=answer))
    write_trajectories(os.path.join(round_dir, "trajectories.jsonl"),
                       searched)
    write_trajectories(os.path.join(round_dir, "kept.jsonl"), searched[:4])
    out = str(tmp_path / "data.json")
    common = ("--round_dir", round_dir, "--results", out, "--eval_greedy",
              "8", "--sft.total_steps", "10", "--sft.batch_size", "4")
    _run(*common, "--selections", "kept_correct,corrective")
    _run(*common, "--selections", "gold_kept_prompts", "--filters", "true")
    with open(out) as f:
        content = json.load(f)
    methods, counts = content["methods"], content["extra"]["counts"]
    greedy = search_prompts(task, list(imagined.prompts), method="greedy",
                            models=SolverModels(policy=policy,
                                                tokenizer=tokenizer,
                                                add_bos=True),
                            config=GreedyConfig(max_tokens=96,
                                                prompt_width=96),
                            key=0, batch_size=8, progress=False)
    wrong = [g.answer != imagined.answers[g.uid] for g in greedy]
    assert counts == {"prompts": 6, "searched_right": 3, "kept": 4,
                      "greedy_right_on_prompts": 6 - sum(wrong),
                      "greedy_right_on_kept_prompts": 4 - sum(wrong[:4])}
    # The second run kept the first run's rows (same round and SFT).
    assert methods["kept_correct"]["examples"] == 3
    if any(wrong[:3]):           # A selection with no examples: no row.
        assert methods["corrective"]["examples"] == sum(wrong[:3])
    else:
        assert "corrective" not in methods
    assert methods["gold_kept_prompts"]["examples"] == 4
    # Every trajectory is finished and three of six are right.
    filters = content["extra"]["filters"]
    assert len(filters) == 7 and "agreement/8" in filters
    assert all(row["1.0"] == 0.5 for row in filters.values())
    for name in ("shipped policy", "kept_correct", "gold_kept_prompts"):
        assert methods[name]["n"] == 8
        assert 0.0 <= methods[name]["accuracy"] <= 1.0
