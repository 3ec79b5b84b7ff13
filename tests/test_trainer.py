"""The general trainer: loss goes down, checkpoints resume bit-identically."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.sampling.decode import sequence_log_probs
from qstar_jax.training import (TrainConfig, batch_indices, bce_loss,
                                learning_rate_schedule, mse_loss,
                                read_scalars, restore_params, sft_arrays,
                                sft_loss, tensorboard_dir, train)

CONFIG = tiny(vocab_size=32, hidden_size=32, num_layers=2, num_heads=2,
              num_kv_heads=1, head_dim=16, intermediate_size=64,
              max_seq_len=32)


def toy_data(n=64):
    """Prompts of random tokens; the target repeats the prompt reversed."""
    rng = np.random.default_rng(0)
    prompts = [[1] + list(rng.integers(3, 12, 4)) for _ in range(n)]
    targets = [p[:0:-1] + [2] for p in prompts]
    return sft_arrays(prompts, targets, max_len=12)


def params_of(model):
    return jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_sft_arrays_mask_prompt():
    data = sft_arrays([[1, 5, 6]], [[7, 2]], max_len=6)
    assert data["tokens"].tolist() == [[1, 5, 6, 7, 2, 0]]
    assert data["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 0]]
    assert data["lengths"].tolist() == [5]
    with pytest.raises(ValueError):
        sft_arrays([[1, 2, 3]], [[4, 5]], max_len=4)


def test_sft_loss_counts_target_tokens_only():
    model = init_decoder(CONFIG, 0)
    data = {k: np.asarray(v) for k, v in toy_data(4).items()}
    loss, metrics = sft_loss(model, data)
    logp = np.asarray(sequence_log_probs(model, data["tokens"],
                                         data["lengths"]))
    mask = data["loss_mask"][:, 1:]
    assert np.isclose(float(loss), -(logp * mask).sum() / mask.sum(),
                      rtol=1e-5)
    assert float(metrics["target_tokens"]) == mask.sum() == 4 * 5
    assert abs(float(loss) - np.log(CONFIG.vocab_size)) < 0.5


def test_critic_losses():
    x = np.array([0.0, 2.0, -1.0], np.float32)
    y = np.array([1.0, 2.0, 0.0], np.float32)
    assert np.isclose(float(mse_loss(x, y)), 2.0 / 3.0)
    assert np.isclose(float(mse_loss(x, y, np.array([1.0, 1.0, 0.0]))), 0.5)
    assert np.isclose(float(bce_loss(np.zeros(2), np.array([0.0, 1.0]))),
                      np.log(2.0))


def test_batch_order_is_a_function_of_seed_and_step():
    a = batch_indices(10, 4, seed=3, step=2)
    assert a.tolist() == batch_indices(10, 4, seed=3, step=2).tolist()
    epoch = np.concatenate([batch_indices(12, 4, 0, s) for s in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))  # One permutation.
    assert not np.array_equal(batch_indices(12, 4, 1, 0),
                              batch_indices(12, 4, 0, 0))


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(learning_rate=1e-2, warmup_steps=10, total_steps=100,
                      end_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg)
    assert float(lr(0)) == 0.0 and np.isclose(float(lr(10)), 1e-2)
    assert np.isclose(float(lr(100)), 1e-3)
    assert float(lr(50)) < float(lr(20))


def test_loss_decreases(tmp_path):
    cfg = TrainConfig(learning_rate=1e-2, warmup_steps=5, total_steps=40,
                      batch_size=16, log_every=10)
    log = tmp_path / "metrics.jsonl"
    seen = []

    def eval_fn(model):
        seen.append(model.config.vocab_size)
        return {"score": 1.5}

    result = train(init_decoder(CONFIG, 0), toy_data(), sft_loss, cfg,
                   log_path=str(log), progress=False, eval_fn=eval_fn,
                   eval_every=20)
    assert seen == [32, 32]
    evals = [h for h in result.history if "eval/score" in h]
    assert [h["step"] for h in evals] == [20, 40]
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert result.step == 40 and len(losses) == 4
    assert losses[-1] < 0.75 * losses[0]
    records = [json.loads(line) for line in log.read_text().splitlines()
               if "eval/score" not in line]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert {"loss", "lr", "grad_norm", "token_accuracy"} <= set(records[0])
    # The same scalars, read back from the TensorBoard event files.
    board = read_scalars(tensorboard_dir(str(log)))
    assert board["eval/score"] == [(20, 1.5), (40, 1.5)]
    for name in ("loss", "lr", "grad_norm", "token_accuracy"):
        steps, values = zip(*board[f"train/{name}"])
        assert steps == (10, 20, 30, 40)
        np.testing.assert_allclose(values, [r[name] for r in records],
                                   rtol=1e-6)   # float32 in the file.


def test_resume_is_bit_identical(tmp_path):
    cfg = TrainConfig(learning_rate=5e-3, warmup_steps=2, total_steps=9,
                      batch_size=8, checkpoint_every=3, log_every=3)
    data = toy_data()
    full = train(init_decoder(CONFIG, 0), data, sft_loss, cfg,
                 checkpoint_dir=str(tmp_path / "a"), progress=False)
    cut = train(init_decoder(CONFIG, 0), data, sft_loss, cfg,
                checkpoint_dir=str(tmp_path / "b"), progress=False,
                stop_at=5)  # Interrupted at 5; the last checkpoint is 3.
    assert cut.step == 5
    resumed = train(init_decoder(CONFIG, 1), data, sft_loss, cfg,
                    checkpoint_dir=str(tmp_path / "b"), resume=True,
                    progress=False)
    assert resumed.step == 9
    assert resumed.history[0]["step"] == 6  # Picked up after step 3.
    for a, b in zip(params_of(full.model), params_of(resumed.model),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not all(np.array_equal(a, b) for a, b in zip(
        params_of(full.model), params_of(init_decoder(CONFIG, 0))))


def test_restore_params_of_an_earlier_step(tmp_path):
    cfg = TrainConfig(learning_rate=5e-3, warmup_steps=2, total_steps=6,
                      batch_size=8, checkpoint_every=3, log_every=3,
                      max_checkpoints=3)
    data = toy_data()
    train(init_decoder(CONFIG, 0), data, sft_loss, cfg,
          checkpoint_dir=str(tmp_path / "run"), progress=False)
    early = train(init_decoder(CONFIG, 0), data, sft_loss, cfg,
                  progress=False, stop_at=3)
    restored = restore_params(init_decoder(CONFIG, 1), str(tmp_path / "run"),
                              3, cfg)
    for a, b in zip(params_of(early.model), params_of(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="kept"):
        restore_params(init_decoder(CONFIG, 1), str(tmp_path / "run"), 4,
                       cfg)
