"""Sibling contrast: ranking losses, labels, candidate scores, accuracy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.learning import RolloutConfig, collect_rollouts
from qstar_jax.learning.completions import stronger_solver_reward
from qstar_jax.learning.siblings import (batch_pairwise_accuracy,
                                         candidate_labels,
                                         listwise_ranking_loss,
                                         pairwise_accuracy,
                                         pairwise_ranking_loss, score_siblings,
                                         sibling_arrays, sibling_loss,
                                         unpack_candidates)
from qstar_jax.models.config import tiny
from qstar_jax.models.critic import (Critic, last_token_scores,
                                     score_branches, step_evidence)
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer
from qstar_jax.tasks.arithchain import (ArithChain, ArithChainConfig,
                                        vocabulary_words)


def test_pairwise_loss_gradient_raises_the_right_sibling():
    scores = jnp.array([[0.3, 0.1, -0.2, 0.5]])
    targets = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])      # Sibling 3 does not count.
    grad = jax.grad(pairwise_ranking_loss)(scores, targets, mask)
    assert grad[0, 0] < 0                 # Right: its score goes up.
    assert grad[0, 1] > 0 and grad[0, 2] > 0   # Wrong: theirs go down.
    assert grad[0, 3] == 0                # Masked out.
    # The value: the mean of softplus(s_wrong - s_right) over the 2 pairs.
    want = np.mean([np.log1p(np.exp(0.1 - 0.3)),
                    np.log1p(np.exp(-0.2 - 0.3))])
    np.testing.assert_allclose(
        pairwise_ranking_loss(scores, targets, mask), want, rtol=1e-6)


def test_listwise_loss_matches_a_softmax_by_hand_and_skips_flat_groups():
    scores = jnp.array([[2.0, 0.0, 1.0], [0.5, 0.5, 0.0], [1.0, -1.0, 0.0]])
    targets = jnp.array([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # Row 1 has only right siblings counted and row 2 all equal targets:
    # neither is informative, so the loss is row 0's alone.
    logp = jax.nn.log_softmax(scores[0])
    want = -(0.5 * logp[1] + 0.5 * logp[2])
    got = listwise_ranking_loss(scores, targets, mask)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = jax.grad(listwise_ranking_loss)(scores, targets, mask)
    assert grad[0, 0] > 0 and grad[0, 1] < 0
    np.testing.assert_array_equal(grad[1:], 0.0)
    # A fully masked group stays finite.
    z = jnp.zeros((1, 3))
    assert jnp.isfinite(jax.grad(listwise_ranking_loss)(z, z, z)).all()


def test_grouped_losses_equal_the_per_state_layout():
    """Packed slots with group ids give the same losses and accuracy as the
    [R, S, K] layout they were packed from."""
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 2, 4)).astype(np.float32)
    targets = rng.integers(0, 2, (3, 2, 4)).astype(np.float32)
    mask = (rng.random((3, 2, 4)) < 0.7).astype(np.float32)
    groups = np.broadcast_to(np.arange(2)[None, :, None], (3, 2, 4))
    flat = [jnp.asarray(x.reshape(3, 8)) for x in (scores, targets, mask)]
    grouped = jnp.asarray(groups.reshape(3, 8))
    for fn in (pairwise_ranking_loss, listwise_ranking_loss,
               batch_pairwise_accuracy):
        np.testing.assert_allclose(
            fn(*flat, grouped), fn(*map(jnp.asarray, (scores, targets,
                                                       mask))), rtol=1e-5)


def test_pairwise_accuracy_against_a_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 3, 4)).round(1)         # Some ties.
    labels = rng.choice([0.0, 1.0, np.nan], size=(5, 3, 4))
    wins = count = 0
    for r, t in itertools.product(range(5), range(3)):
        for i, j in itertools.product(range(4), range(4)):
            if labels[r, t, i] == 1 and labels[r, t, j] == 0:
                count += 1
                wins += (1.0 if scores[r, t, i] > scores[r, t, j]
                         else 0.5 if scores[r, t, i] == scores[r, t, j]
                         else 0.0)
    acc, pairs = pairwise_accuracy(scores, labels)
    assert pairs == count > 0
    assert acc == pytest.approx(wins / count)
    on_device = batch_pairwise_accuracy(
        jnp.asarray(scores), jnp.nan_to_num(jnp.asarray(labels)),
        jnp.asarray(np.isfinite(labels), jnp.float32))
    assert float(on_device) == pytest.approx(wins / count, rel=1e-6)
    assert np.isnan(pairwise_accuracy(scores, np.zeros_like(labels))[0])


@pytest.fixture(scope="module")
def arith_rollouts():
    """Rollouts of a random tiny policy with candidates on 2 problems."""
    from qstar_jax.models.decoder import init_decoder
    task = ArithChain(ArithChainConfig(num_steps_min=2, num_steps_max=2,
                                       num_distractors=0))
    tokenizer = ArithTokenizer(vocabulary_words())
    policy = init_decoder(tiny(vocab_size=tokenizer.vocab_size,
                               num_layers=1), seed=0)
    config = RolloutConfig(num_rollouts=2, solutions="gold",
                           sampling=SamplingConfig(temperature=1.0),
                           max_tokens=40, prompt_width=48, max_steps=4,
                           num_candidates=3, candidate_samples=4,
                           max_step_tokens=8, batch_size=2,
                           state_batch_size=8, seed=0)
    ds = collect_rollouts(policy, tokenizer, task, [0, 1], config,
                          progress=False)
    return task, tokenizer, policy, ds


def test_gold_rollouts_are_the_gold_solutions(arith_rollouts):
    task, tokenizer, _, ds = arith_rollouts
    problems = task.problems("train")
    assert ds.outcome.tolist() == [1.0] * 4
    assert ds.step_correct[ds.step_mask()].all()
    for r in range(4):
        p = problems[int(ds.problem_index[r])]
        text = tokenizer.decode(ds.solution_ids(r).tolist())
        assert text == task.format_solution(p)
        assert ds.num_steps[r] == len(p.solution_steps)
    assert ds.cand_valid.any()


def test_candidate_labels_grade_prefix_plus_candidate(arith_rollouts):
    task, tokenizer, _, ds = arith_rollouts
    labels = candidate_labels(task, tokenizer, ds)
    problems = task.problems("train")
    assert np.isnan(labels[~ds.cand_valid]).all()
    for r, t, k in zip(*np.nonzero(ds.cand_valid)):
        gold = problems[int(ds.problem_index[r])].solution_steps
        step = tokenizer.decode(
            ds.cand_tokens[r, t, k, :ds.cand_lengths[r, t, k]].tolist())
        text = "\n".join(gold[:t + 1]) + "\n" + step
        assert labels[r, t, k] == stronger_solver_reward(
            task, problems[int(ds.problem_index[r])], text)


def test_candidate_scores_equal_scoring_each_sequence(arith_rollouts,
                                                     random_critic):
    task, tokenizer, _, ds = arith_rollouts
    labels = np.where(ds.cand_valid, 1.0, np.nan)
    data = sibling_arrays(ds, labels)
    assert data["mask"].sum() == ds.cand_valid.sum()
    critic = random_critic(tokenizer.vocab_size, 3)
    packed = score_siblings(critic, data, batch_size=3)
    got = unpack_candidates(data, packed, ds.cand_valid.shape)
    assert np.isnan(got[~ds.cand_valid]).all()
    for r, t, k in zip(*np.nonzero(ds.cand_valid)):
        end = ds.step_ends[r, t] + 1
        n = ds.cand_lengths[r, t, k]
        seq = np.concatenate([ds.tokens[r, :end],
                              ds.cand_tokens[r, t, k, :n]])
        want = last_token_scores(critic, jnp.asarray(seq[None]),
                                 jnp.asarray([len(seq)]))[0]
        np.testing.assert_allclose(got[r, t, k], want, atol=1e-4)


def test_evidence_critic_adds_a_trained_log_probability_term():
    critic = Critic(tiny(vocab_size=16, num_layers=1), evidence=True,
                    rngs=nnx.Rngs(0))
    tokens = jnp.array([[1, 4, 5, 0]])
    branches = jnp.array([[[6, 7], [8, 0]]])
    lengths = jnp.array([[2, 1]])
    logp = jnp.array([[-1.0, -3.0]])
    with pytest.raises(ValueError, match="branch_log_probs"):
        score_branches(critic, tokens, jnp.array([3]), branches, lengths)
    with pytest.raises(ValueError, match="evidence critic"):
        critic(tokens, jnp.array([3]))
    base = score_branches(critic, tokens, jnp.array([3]), branches, lengths,
                          branch_log_probs=logp)
    critic.evidence.kernel[...] = jnp.array([[2.0], [0.5]])
    got = score_branches(critic, tokens, jnp.array([3]), branches, lengths,
                         branch_log_probs=logp)
    # sum 2 * logp + 0.5 * logp / length
    want = base + jnp.array([[2 * -1.0 + 0.5 * -0.5, 2 * -3.0 + 0.5 * -3.0]])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    feats = step_evidence(jnp.array([-jnp.inf, -2.0]), jnp.array([3, 4]))
    np.testing.assert_allclose(feats, [[0.0, 0.0], [-2.0, -0.5]])


def test_sibling_loss_training_step_ranks_siblings(arith_rollouts):
    """A few updates of the listwise + BCE loss raise the batch's pairwise
    accuracy on a fixed batch with both right and wrong siblings."""
    from qstar_jax.training.trainer import TrainConfig, train
    task, tokenizer, _, ds = arith_rollouts
    rng = np.random.default_rng(0)
    labels = np.where(ds.cand_valid,
                      rng.integers(0, 2, ds.cand_valid.shape), np.nan)
    data = sibling_arrays(ds, labels.astype(np.float32))
    critic = Critic(tiny(vocab_size=tokenizer.vocab_size, num_layers=1),
                    rngs=nnx.Rngs(0))
    loss_fn = sibling_loss("bce", "listwise")
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    before = float(loss_fn(critic, batch)[0])
    train(critic, data, loss_fn, TrainConfig(
        learning_rate=3e-3, warmup_steps=0, total_steps=30,
        batch_size=len(data["tokens"]), log_every=30), progress=False)
    loss, metrics = loss_fn(critic, batch)
    assert float(loss) < before
    assert float(metrics["pairwise_accuracy"]) > 0.9
    with pytest.raises(ValueError):
        sibling_loss(None, None)
    with pytest.raises(ValueError):
        sibling_loss("hinge", None)


def test_contrast_rows_hold_each_gold_step_and_its_flips(random_critic):
    from qstar_jax.learning.siblings import contrast_sibling_arrays
    task = ArithChain(ArithChainConfig(num_steps_min=3, num_steps_max=3))
    tokenizer = ArithTokenizer(vocabulary_words())
    problems = task.problems("train")[:3]
    data = contrast_sibling_arrays(task, tokenizer, problems, width=128)
    for i, p in enumerate(problems):
        gold = list(p.solution_steps)
        ids = tokenizer.encode(task.format_prompt(p), add_bos=True) + \
            tokenizer.encode(task.format_solution(p), add_eos=True)
        assert data["tokens"][i, :data["lengths"][i]].tolist() == ids
        for t, step in enumerate(gold):
            slots = np.nonzero((data["cand_group"][i] == t)
                               & (data["mask"][i] > 0))[0]
            texts = [tokenizer.decode(data["cand_tokens"][i, j, :data[
                "cand_lengths"][i, j]].tolist()).strip() for j in slots]
            assert texts[0] == step and data["targets"][i, slots[0]] == 1
            assert texts[1:] == task.contrast_steps(p, t)
            assert (data["targets"][i, slots[1:]] == 0).all()
            # The state each follows is the prompt and gold steps < t.
            prefix = data["tokens"][i, :data["cand_prefix"][i, slots[0]]]
            text = tokenizer.decode(prefix.tolist())
            assert text.endswith(task.format_prompt(p) + "".join(
                s + "\n" for s in gold[:t]))
    # The flips are the policy's error: the other operation, right sums.
    flips = task.contrast_steps(problems[0], 0)
    a, op, b, _, c = flips[0].split()
    assert op != gold_op(problems[0], task) and int(c) == (
        int(a) + int(b) if op == "+" else int(a) - int(b))


def gold_op(problem, task):
    return task.program(problem).ops[0]


def test_tool_checks_refute_wrong_written_arithmetic(arith_rollouts):
    import dataclasses

    from qstar_jax.learning.siblings import candidate_tool_checks
    _, tokenizer, _, ds = arith_rollouts
    cand_tokens, cand_lengths = ds.cand_tokens.copy(), ds.cand_lengths.copy()
    cand_valid = ds.cand_valid.copy()
    for k, text in enumerate(["3 + 4 = 8", "3 + 4 = 7", "5 * 6 = 30"]):
        ids = tokenizer.encode(text)
        cand_tokens[0, 0, k] = 0
        cand_tokens[0, 0, k, :len(ids)] = ids
        cand_lengths[0, 0, k] = len(ids)
        cand_valid[0, 0, k] = True
    ds = dataclasses.replace(ds, cand_tokens=cand_tokens,
                             cand_lengths=cand_lengths, cand_valid=cand_valid)
    refuted = candidate_tool_checks(tokenizer, ds)
    assert refuted[0, 0].tolist() == [True, False, False]
    assert not refuted[~ds.cand_valid].any()
    # A custom check sees each valid candidate's decoded text.
    seen = []
    odd = candidate_tool_checks(tokenizer, ds, check=lambda text: (
        seen.append(text) or "8" not in text))
    assert len(seen) == int(ds.cand_valid.sum())
    assert odd[0, 0].tolist() == [True, False, False]


def test_compact_candidates_keeps_the_chosen_slots_in_order(random_critic):
    from qstar_jax.learning.siblings import (EMPTY_SLOT, candidate_scores,
                                             compact_candidates,
                                             contrast_sibling_arrays)
    task = ArithChain(ArithChainConfig(num_steps_min=3, num_steps_max=3))
    tokenizer = ArithTokenizer(vocabulary_words())
    data = contrast_sibling_arrays(task, tokenizer,
                                   task.problems("train")[:4], width=128)
    keep = np.zeros_like(data["mask"], bool)
    keep[0, [1, 4, 5]] = True          # row 0: three slots
    keep[1, -1] = True                 # row 1: an empty (masked-out) slot
    keep[2, 2] = True                  # row 3 keeps nothing
    out = compact_candidates(data, keep)
    assert out["tokens"] is data["tokens"]
    for i in range(4):
        slots = [j for j in range(keep.shape[1])
                 if keep[i, j] and data["mask"][i, j] > 0]
        for key in ("cand_tokens", "cand_lengths", "cand_prefix",
                    "cand_group", "targets", "mask"):
            width = out[key].shape[1]
            assert width == 3
            np.testing.assert_array_equal(out[key][i, :len(slots)],
                                          data[key][i, slots])
            empty = out[key][i, len(slots):]
            assert (empty == EMPTY_SLOT.get(key, 0)).all(), key
    # Scores of the kept slots are those of the full rows.
    critic = random_critic(tokenizer.vocab_size, 0)
    full = np.asarray(candidate_scores(critic, data))
    small = np.asarray(candidate_scores(critic, out))
    np.testing.assert_allclose(small[0, :3], full[0, [1, 4, 5]], atol=1e-5)
    np.testing.assert_allclose(small[2, :1], full[2, [2]], atol=1e-5)
