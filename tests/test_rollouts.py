"""Rollout datasets: collection, candidates, storage, completion returns."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from qstar_jax.learning import completions as C
from qstar_jax.learning import rollout_data, rollout_store
from qstar_jax.learning import rollouts as R
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import propose_steps, rollout
from qstar_jax.tasks import tiny_policy
from qstar_jax.tasks.arithchain import ArithChain

PROBLEMS = [5, 7, 9]
CONFIG = R.RolloutConfig(num_rollouts=2, max_tokens=88, prompt_width=80,
                         max_steps=10, num_candidates=2, candidate_samples=3,
                         max_step_tokens=16, batch_size=2,
                         state_batch_size=16, seed=3,
                         sampling=SamplingConfig(temperature=1.5))


@pytest.fixture(scope="module")
def policy():
    model, tokenizer, task_config = tiny_policy.load_tiny_policy()
    return model, tokenizer, ArithChain(task_config)


@pytest.fixture(scope="module")
def collected(policy, tmp_path_factory):
    """(dataset, store directory) of PROBLEMS in two chunks."""
    out_dir = str(tmp_path_factory.mktemp("store"))
    ds = R.collect_rollouts(*policy, PROBLEMS, CONFIG, out_dir=out_dir,
                            progress=False)
    return ds, out_dir


def assert_same(a: R.RolloutDataset, b: R.RolloutDataset):
    assert a.split == b.split and a.arrays().keys() == b.arrays().keys()
    for name, value in a.arrays().items():
        np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)


def rows_of(ds: R.RolloutDataset, problem: int) -> R.RolloutDataset:
    keep = ds.problem_index == problem
    return dataclasses.replace(ds, **{n: v[keep]
                                      for n, v in ds.arrays().items()})


def test_config_validation():
    with pytest.raises(ValueError, match="num_rollouts"):
        R.RolloutConfig(num_rollouts=0)
    with pytest.raises(ValueError, match="candidate_samples"):
        R.RolloutConfig(num_candidates=4, candidate_samples=3)
    with pytest.raises(ValueError, match="num_candidates"):
        R.RolloutConfig(num_candidates=-1)
    R.RolloutConfig(num_candidates=0, candidate_samples=0)


def test_split_steps_rules(policy):
    _, tok, _ = policy
    stop = R.default_stop_rule(tok, ArithChain())
    masks = R._Masks.of(stop)

    def split(text, eos=False, max_steps=10):
        ids = np.asarray(tok.encode(text, add_eos=eos))
        cut, ends = R._split_steps(ids, masks, tok, max_steps)
        steps = [tok.decode(ids[a + 1:b + 1], skip_special=False)
                 for a, b in zip([-1] + ends[:-1], ends)]
        return tok.decode(ids[:cut], skip_special=False), steps

    # Cut after the answer step; a blank line joins the next step.
    assert split("1 + 2 = 3\n\n3 + 1 = 4\n#### 4\n5 + 5 = 10") == (
        "1 + 2 = 3\n\n3 + 1 = 4\n#### 4\n",
        ["1 + 2 = 3\n", "\n3 + 1 = 4\n", "#### 4\n"])
    assert split("1 + 2 = 3\n#### 3", eos=True) == (
        "1 + 2 = 3\n#### 3<eos>", ["1 + 2 = 3\n", "#### 3<eos>"])
    # Trailing blank joins the previous step; all-blank is one step.
    assert split("1 + 2 = 3\n\n")[1] == ["1 + 2 = 3\n\n"]
    assert split("", eos=True) == ("<eos>", ["<eos>"])
    # Truncated mid-step; more than S steps are cut after step S.
    assert split("1 + 2 = 3\n3 + 1")[1] == ["1 + 2 = 3\n", "3 + 1"]
    assert split("1 + 2 = 3\n3 + 1 = 4\n#### 4", max_steps=2) == (
        "1 + 2 = 3\n3 + 1 = 4\n", ["1 + 2 = 3\n", "3 + 1 = 4\n"])


def test_shapes_and_dtypes(collected):
    ds, _ = collected
    ds.validate()
    r, s, k, t = 3 * 2, 10, 2, 16
    width = CONFIG.prompt_width + CONFIG.max_tokens
    assert ds.split == "train"
    assert ds.problem_index.tolist() == [5, 5, 7, 7, 9, 9]
    assert ds.sample_index.tolist() == [0, 1] * 3
    assert ds.tokens.shape == (r, width) and ds.tokens.dtype == np.int32
    assert ds.step_ends.shape == (r, s) and ds.step_ends.dtype == np.int32
    assert ds.step_correct.shape == (r, s) and ds.step_correct.dtype == bool
    assert ds.outcome.dtype == np.float32 and ds.finished.dtype == bool
    assert ds.cand_tokens.shape == (r, s, k, t)
    assert ds.cand_lengths.shape == ds.cand_valid.shape == (r, s, k)
    assert ds.cand_valid.dtype == bool


def test_steps_outcomes_and_labels_match_the_text(policy, collected):
    _, tok, task = policy
    ds, _ = collected
    newline = tok.encode("\n")[0]
    problems = task.problems("train")
    for r in range(ds.num_rollouts):
        p = problems[int(ds.problem_index[r])]
        pl, n = ds.prompt_lengths[r], ds.num_steps[r]
        assert ds.tokens[r, :pl].tolist() == tok.encode(
            task.format_prompt(p), add_bos=True)
        assert (ds.tokens[r, ds.lengths[r]:] == tok.pad_id).all()
        ends = ds.step_ends[r, :n]
        assert (ends >= pl).all() and (ends < ds.lengths[r]).all()
        assert ends[-1] == ds.lengths[r] - 1 and (ds.step_ends[r, n:] == -1).all()
        assert (ds.tokens[r, ends[:-1]] == newline).all()
        text = tok.decode(ds.solution_ids(r))
        assert ds.outcome[r] == task.reward(p, text)
        assert ds.finished[r] == ("####" in text or tok.eos_id in
                                  ds.solution_ids(r))
        flags = task.step_correctness(p, text)
        assert len(flags) == n
        assert ds.step_correct[r, :n].tolist() == flags
        assert not ds.step_correct[r, n:].any()
    assert ds.outcome.sum() > 0 and ds.step_correct.sum() > 0


def test_transitions(collected):
    ds, _ = collected
    tr = R.transitions(ds)
    assert len(tr.rollout) == ds.num_steps.sum()
    last = tr.step == ds.num_steps[tr.rollout] - 1
    np.testing.assert_array_equal(tr.terminal, last & ds.finished[tr.rollout])
    np.testing.assert_array_equal(tr.reward[last], ds.outcome[tr.rollout[last]])
    assert (tr.reward[~last] == 0).all() and tr.reward.dtype == np.float32
    assert (ds.open_mask()[tr.rollout, tr.step] == ~tr.terminal).all()


def test_select_and_transition_arrays(collected):
    from qstar_jax.learning.critic_training import transition_arrays
    ds, _ = collected
    rows = np.array([2, 0])
    sub = ds.select(rows)
    sub.validate()
    for name, value in sub.arrays().items():
        np.testing.assert_array_equal(value, getattr(ds, name)[rows])
    reward, terminal, mask = transition_arrays(ds)
    tr = R.transitions(ds)
    np.testing.assert_array_equal(np.argwhere(mask),
                                  np.stack([tr.rollout, tr.step], 1))
    np.testing.assert_array_equal(reward[mask], tr.reward)
    np.testing.assert_array_equal(terminal[mask], tr.terminal)
    assert not reward[~mask].any() and not terminal[~mask].any()


def test_batch_independence(policy, collected):
    ds, _ = collected
    other = R.collect_rollouts(*policy, [9, 5], CONFIG, progress=False)
    for problem in (5, 9):  # Other chunk, other row of the batch.
        assert_same(rows_of(ds, problem), rows_of(other, problem))


def test_candidates_match_direct_proposals(policy, collected):
    model, tok, task = policy
    ds, _ = collected
    assert not ds.cand_valid[ds.terminal_mask()].any()
    assert (ds.cand_valid[..., 0] == ds.open_mask()).all()
    rows, steps = np.nonzero(ds.open_mask())
    n = CONFIG.state_batch_size
    pick = np.arange(0, len(rows), max(1, len(rows) // n))[:n]
    rows, steps = rows[pick], steps[pick]
    lengths = ds.step_ends[rows, steps] + 1
    tokens = np.full((n, ds.tokens.shape[1]), tok.pad_id, np.int32)
    for i, (r, length) in enumerate(zip(rows, lengths)):
        tokens[i, :length] = ds.tokens[r, :length]
    lengths = np.resize(lengths, n)
    keys = R.derive_keys(CONFIG.seed, R.CANDIDATE_STREAM,
                         np.resize(ds.problem_index[rows], n),
                         np.resize(ds.sample_index[rows], n),
                         np.resize(steps, n))
    direct = jax.device_get(jax.jit(propose_steps, static_argnames="config")(
        model, tokens, lengths, keys, R.default_stop_rule(tok, task),
        config=CONFIG.proposer_config(tok.pad_id)))
    got_valid = ds.cand_valid[rows, steps]
    np.testing.assert_array_equal(got_valid, direct.valid[:len(rows)])
    np.testing.assert_array_equal(ds.cand_lengths[rows, steps][got_valid],
                                  direct.lengths[:len(rows)][got_valid])
    np.testing.assert_array_equal(ds.cand_tokens[rows, steps][got_valid],
                                  direct.tokens[:len(rows)][got_valid])
    assert (ds.cand_tokens[~ds.cand_valid] == tok.pad_id).all()


def test_resume_recomputes_only_missing_chunks(policy, collected, tmp_path,
                                               monkeypatch):
    ds, store = collected
    out_dir = str(tmp_path / "store")
    shutil.copytree(store, out_dir)
    assert sorted(os.listdir(out_dir)) == ["chunk_00000.npz",
                                           "chunk_00001.npz", "meta.json"]
    assert_same(R.load_rollouts(out_dir), ds)
    kept = os.stat(R.chunk_path(out_dir, 0)).st_mtime_ns
    os.remove(R.chunk_path(out_dir, 1))
    calls = []
    real = R._collect_chunk
    monkeypatch.setattr(R, "_collect_chunk",
                        lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    again = R.collect_rollouts(*policy, PROBLEMS, CONFIG, out_dir=out_dir,
                               progress=False)
    assert [c.tolist() for c in calls] == [[9]]
    assert os.stat(R.chunk_path(out_dir, 0)).st_mtime_ns == kept
    assert_same(again, ds)
    assert_same(R.load_rollouts(out_dir), ds)
    assert not [f for f in os.listdir(out_dir) if "tmp" in f]


def test_store_errors(policy, collected, tmp_path):
    ds, store = collected
    out_dir = str(tmp_path / "store")
    shutil.copytree(store, out_dir)
    # Another call's settings: refused before any work.
    other = dataclasses.replace(CONFIG, seed=4)
    with pytest.raises(R.RolloutStoreError, match="config"):
        R.collect_rollouts(*policy, PROBLEMS, other, out_dir=out_dir,
                           progress=False)
    with pytest.raises(R.RolloutStoreError, match="problem_indices"):
        R.collect_rollouts(*policy, [5, 7], CONFIG, out_dir=out_dir,
                           progress=False)
    # A truncated chunk is named.
    path = R.chunk_path(out_dir, 1)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(R.RolloutStoreError, match="chunk_00001"):
        R.load_rollouts(out_dir)
    with pytest.raises(R.RolloutStoreError, match="chunk_00001"):
        R.collect_rollouts(*policy, PROBLEMS, CONFIG, out_dir=out_dir,
                           progress=False)
    # Out-of-range contents and a chunk of other problems are named too.
    bad = dataclasses.replace(ds, step_ends=ds.step_ends + 1000)
    rollout_store._save_npz(path, dataclasses.replace(
        bad, **{n: v[4:] for n, v in bad.arrays().items()}))
    with pytest.raises(R.RolloutStoreError, match="chunk_00001.*step_ends"):
        R.load_rollouts(out_dir)
    rollout_store._save_npz(path, rows_of(ds, 5))
    with pytest.raises(R.RolloutStoreError, match="chunk_00001.*problem"):
        R.load_rollouts(out_dir)
    os.remove(path)
    with pytest.raises(R.RolloutStoreError, match="chunk_00001.*missing"):
        R.load_rollouts(out_dir)


def test_resume_false_starts_afresh(policy, collected, tmp_path):
    ds, store = collected
    out_dir = str(tmp_path / "store")
    shutil.copytree(store, out_dir)
    other = dataclasses.replace(CONFIG, seed=4)
    fresh = R.collect_rollouts(*policy, [7], other, out_dir=out_dir,
                               resume=False, progress=False)
    assert sorted(os.listdir(out_dir)) == ["chunk_00000.npz", "meta.json"]
    assert_same(R.load_rollouts(out_dir), fresh)


def test_save_load_file_round_trip(collected, tmp_path):
    ds, _ = collected
    path = str(tmp_path / "rollouts.npz")
    R.save_rollouts(ds, path)
    assert_same(R.load_rollouts(path), ds)
    no_cand = dataclasses.replace(
        ds, **{n: None for n in rollout_data._CAND_FIELDS})
    R.save_rollouts(no_cand, path)
    loaded = R.load_rollouts(path)
    assert not loaded.has_candidates
    assert_same(loaded, no_cand)


def _first_answer_line(text: str) -> str:
    """The text cut after the line of its first '####' (what is graded)."""
    if "####" not in text:
        return text
    head, tail = text.split("####", 1)
    return head + "####" + tail.split("\n", 1)[0]


def test_completion_returns_grade_the_decoded_text(policy, collected):
    model, tok, task = policy
    ds, _ = collected
    sampling = SamplingConfig(temperature=1.5)
    kwargs = dict(num_completions=2, sampling=sampling, max_tokens=64,
                  batch_size=16, seed=1)
    returns, valid = C.completion_returns(model, tok, task, ds,
                                          progress=False, **kwargs)
    assert returns.shape == valid.shape == (6, 10, 2)
    assert returns.dtype == np.float32 and valid.dtype == bool
    np.testing.assert_array_equal(valid, np.repeat(ds.open_mask()[..., None],
                                                   2, -1))
    assert not returns[~valid].any()
    stop = R.default_stop_rule(tok, task)
    problems = task.problems("train")
    pad_id = tok.pad_id if tok.pad_id is not None else 0
    completions = {}
    for batch in C.iter_completions(model, ds, stop, progress=False,
                                    pad_id=pad_id, **kwargs):
        for i, (r, t) in enumerate(zip(batch.rollout, batch.step)):
            for c in range(2):
                comp = batch.tokens[i, c, :batch.lengths[i, c]].tolist()
                completions[int(r), int(t), c] = comp
                text = tok.decode(ds.solution_ids(r, t).tolist() + comp)
                assert returns[r, t, c] == task.reward(
                    problems[ds.problem_index[r]], _first_answer_line(text))
    assert len(completions) == valid.sum()

    # A few completions regenerated independently: `rollout` from the stored
    # prefix ds.tokens[r, :step_end + 1] and the documented key
    # fold_in(key(seed), COMPLETION_STREAM, problem, sample, t).
    rows, steps = np.nonzero(ds.open_mask())
    picks = [(int(rows[i]), int(steps[i]))
             for i in np.linspace(0, len(rows) - 1, 4).astype(int)]
    tokens = np.full((len(picks), ds.tokens.shape[1]), pad_id, np.int32)
    lengths = np.zeros(len(picks), np.int32)
    keys = []
    for i, (r, t) in enumerate(picks):
        lengths[i] = ds.step_ends[r, t] + 1
        tokens[i, :lengths[i]] = ds.tokens[r, :lengths[i]]
        key = jax.random.fold_in(jax.random.key(1), R.COMPLETION_STREAM)
        for index in (ds.problem_index[r], ds.sample_index[r], t):
            key = jax.random.fold_in(key, int(index))
        keys.append(key)
    again = jax.jit(rollout, static_argnames=(
        "max_tokens", "num_samples", "sampling", "pad_id"))(
        model, tokens, lengths, jax.numpy.stack(keys), stop, max_tokens=64,
        num_samples=2, sampling=sampling, pad_id=pad_id)
    graded = set()
    for i, (r, t) in enumerate(picks):
        for c in range(2):
            comp = np.asarray(again.tokens[i, c, :again.lengths[i, c]])
            assert comp.tolist() == completions[r, t, c], (r, t, c)
            text = _first_answer_line(tok.decode(ds.solution_ids(r, t)
                                                 .tolist() + comp.tolist()))
            reward = task.reward(problems[ds.problem_index[r]], text)
            assert returns[r, t, c] == reward, (r, t, c, text)
            graded.add(reward)
    assert len(set(picks)) == 4, picks
    assert graded == {0.0, 1.0}, graded  # Both outcomes regenerated.


def _handmade(tok, task, problem, solutions):
    """A dataset of the given solution texts of one problem (host only)."""
    s, width = 8, 200
    prompt = tok.encode(task.format_prompt(problem), add_bos=True)
    r = len(solutions)
    arrays = dict(problem_index=np.full(r, 0, np.int32),
                  sample_index=np.arange(r, dtype=np.int32),
                  tokens=np.zeros((r, width), np.int32),
                  lengths=np.zeros(r, np.int32),
                  prompt_lengths=np.full(r, len(prompt), np.int32),
                  step_ends=np.full((r, s), -1, np.int32),
                  num_steps=np.zeros(r, np.int32),
                  outcome=np.zeros(r, np.float32),
                  step_correct=np.zeros((r, s), bool),
                  finished=np.zeros(r, bool))
    for i, text in enumerate(solutions):
        ids = prompt + tok.encode(text, add_eos="####" in text)
        ends = [j for j in range(len(prompt), len(ids))
                if tok.decode([ids[j]]) == "\n"]
        ends = ends + [len(ids) - 1] if ends[-1:] != [len(ids) - 1] else ends
        arrays["tokens"][i, :len(ids)] = ids
        arrays["lengths"][i] = len(ids)
        arrays["step_ends"][i, :len(ends)] = ends
        arrays["num_steps"][i] = len(ends)
        arrays["finished"][i] = "####" in text
        arrays["outcome"][i] = task.reward(problem, text)
    ds = R.RolloutDataset(split="train", **arrays)
    ds.validate()
    return ds


def test_stronger_solver_returns_on_handmade_rollouts(policy):
    _, tok, task = policy
    problem = task.problems("train")[0]
    gold = list(problem.solution_steps)
    wrong = gold[1].rsplit("=", 1)[0] + "= 1"
    ds = _handmade(tok, task, problem, [
        "\n".join(gold),                          # Correct and finished.
        "\n".join(gold[:1] + [wrong]),            # Wrong value, truncated.
        "\n".join(gold[:2] + ["I am lost"]),      # Unparseable, truncated.
    ])
    returns, valid = C.stronger_solver_returns(task, tok, ds)
    assert returns.shape == valid.shape == (3, 8)
    np.testing.assert_array_equal(valid, ds.open_mask())
    n = len(gold)
    assert returns[0, :n - 1].tolist() == [1.0] * (n - 1)  # Last: terminal.
    assert not valid[0, n - 1]
    assert returns[1, :2].tolist() == [1.0, 0.0] and valid[1, 1]
    assert returns[2, :3].tolist() == [1.0, 1.0, 0.0] and valid[2, 2]
    assert not returns[~valid].any()


def test_truncated_rollouts_bootstrap(policy):
    short = dataclasses.replace(CONFIG, max_tokens=20, max_steps=2)
    ds = R.collect_rollouts(*policy, [5], short, progress=False)
    ds.validate()
    assert not ds.finished.any() and (ds.outcome == 0).all()
    assert (ds.lengths - ds.prompt_lengths <= 20).all()
    tr = R.transitions(ds)
    assert not tr.terminal.any() and (tr.reward == 0).all()
    last = ds.num_steps - 1
    assert ds.open_mask()[np.arange(2), last].all()
    assert ds.cand_valid[np.arange(2), last, 0].all()
