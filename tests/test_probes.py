"""Token probes: the loss against NumPy, gradients reaching the backbone,
sentence-end targets and the ArithChain story labels they carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qstar_jax.learning import arithchain_text as text
from qstar_jax.learning.probes import (ProbedCritic, sentence_end_targets,
                                       token_probe_loss, with_token_probe)
from qstar_jax.models.config import tiny
from qstar_jax.models.critic import Critic
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer
from qstar_jax.tasks.arithchain import (NAMES, ArithChain,
                                        ArithChainConfig, make_problem,
                                        vocabulary_words)


def _model(vocab=32, seed=0):
    critic = Critic(tiny(vocab_size=vocab, num_layers=1),
                    rngs=nnx.Rngs(seed))
    return ProbedCritic(critic, num_classes=3, rngs=nnx.Rngs(seed + 1))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 32, (3, 10)).astype(np.int32)
    lengths = np.array([10, 7, 4], np.int32)
    targets = np.full((3, 8), -1, np.int32)
    targets[0, [2, 5, 7]] = [0, 2, 1]
    targets[1, [6]] = [1]
    return {"tokens": jnp.asarray(tokens), "lengths": jnp.asarray(lengths),
            "probe_targets": jnp.asarray(targets)}


def test_probe_loss_is_the_mean_cross_entropy_at_labelled_tokens():
    model, batch = _model(), _batch()
    loss, metrics = token_probe_loss(model, batch)
    # Reference: encode each row alone (its first 8 tokens, its length),
    # softmax by hand, mean over the labelled tokens.
    nll, right = [], []
    for i in range(3):
        n = min(int(batch["lengths"][i]), 8)
        logits = np.asarray(model.probe_logits(batch["tokens"][i:i + 1, :n],
                                               jnp.array([n])))[0]
        for t in range(8):
            y = int(batch["probe_targets"][i, t])
            if y < 0:
                continue
            z = logits[t] - logits[t].max()
            nll.append(np.log(np.exp(z).sum()) - z[y])
            right.append(logits[t].argmax() == y)
    np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(metrics["probe_accuracy"], np.mean(right))
    empty = dict(batch, probe_targets=jnp.full((3, 8), -1, jnp.int32))
    assert float(token_probe_loss(model, empty)[0]) == 0.0


def test_with_token_probe_adds_the_weighted_probe_and_trains_the_backbone():
    model, batch = _model(), _batch()

    def critic_loss(critic, b):
        value = critic(b["tokens"], b["lengths"])[:, 0].sum()
        return value, {"critic": value}

    loss_fn = with_token_probe(critic_loss, 0.5)
    loss, metrics = loss_fn(model, batch)
    probe, _ = token_probe_loss(model, batch)
    np.testing.assert_allclose(loss, metrics["critic"] + 0.5 * probe,
                               rtol=1e-6)
    # With a zero critic head, the only gradient into the backbone's
    # embedding is the probe's.
    grads = nnx.grad(lambda m: loss_fn(m, batch)[0])(model)
    embed = jax.tree.leaves(grads.critic.backbone)
    assert any(float(jnp.abs(g).max()) > 0 for g in embed)
    assert float(jnp.abs(grads.probe.kernel[...]).max()) > 0
    with pytest.raises(ValueError, match="weight"):
        with_token_probe(critic_loss, 0.0)


def test_sentence_roles_agree_with_the_program_and_its_templates():
    task = ArithChain(ArithChainConfig(num_distractors=3, seed=3))
    for split in ("train", "test"):
        for i in range(60):
            p = make_problem(task.config, split, i)
            roles = text.sentence_roles(p.question)
            assert len(roles) == len(text.split_sentences(p.question))
            assert roles[0] == roles[-1] == "other"
            assert tuple(r for r in roles if r != "other") == p.program.ops
            assert roles.count("other") == 2 + task.config.num_distractors
            # The two 'gives' sentences: '+' when the person receives.
            for sentence, role in zip(text.split_sentences(p.question),
                                      roles):
                if " gives " in sentence and role != "other":
                    person = p.question.split()[0]
                    assert role == ("-" if sentence.startswith(person)
                                    else "+")
    assert text.sentence_roles("Mia has 3 pens. What now?") is None


def test_sentence_end_targets_label_each_sentence_end_in_order():
    tokenizer = ArithTokenizer(vocabulary_words())
    task = ArithChain(ArithChainConfig(num_steps_min=3, num_steps_max=3))
    problems = task.problems("train")[:3]
    rows, prompts, labels = [], [], []
    for p in problems:
        prompt = tokenizer.encode(task.format_prompt(p), add_bos=True)
        rows.append(prompt + tokenizer.encode(task.format_solution(p)))
        prompts.append(len(prompt))
        labels.append(list(range(len(text.split_sentences(p.question)))))
    width = max(map(len, rows))
    tokens = np.array([r + [0] * (width - len(r)) for r in rows])
    ends = [tokenizer.encode(".")[0], tokenizer.encode("?")[0]]
    out = sentence_end_targets(tokens, np.array(prompts), labels, ends)
    assert out.shape == (3, max(prompts))
    for i, p in enumerate(problems):
        labelled = np.flatnonzero(out[i] >= 0)
        assert out[i, labelled].tolist() == labels[i]
        # Each labelled token ends the matching sentence of the question.
        for k, pos in enumerate(labelled):
            sentence = text.split_sentences(p.question)[k]
            assert tokenizer.decode(tokens[i, :pos + 1].tolist()).endswith(
                sentence)
    with pytest.raises(ValueError, match="sentence ends"):
        sentence_end_targets(tokens, np.array(prompts),
                             [l[:-1] for l in labels], ends)


def test_story_probe_targets_mark_roles_and_the_person():
    tokenizer = ArithTokenizer(vocabulary_words())
    task = ArithChain(ArithChainConfig(seed=5))
    problems = task.problems("train")[:6]
    prompts = [tokenizer.encode(task.format_prompt(p), add_bos=True)
               for p in problems]
    width = max(map(len, prompts)) + 4
    tokens = np.array([r + [7] * (width - len(r)) for r in prompts])
    lengths = np.array([len(r) for r in prompts])
    out = text.story_probe_targets(tokenizer, [p.question for p in problems],
                                   tokens, lengths)
    classes = text.STORY_PROBE_CLASSES
    for i, p in enumerate(problems):
        person = p.question.split()[0]
        words = [tokenizer.decode([int(t)]).strip()
                 for t in tokens[i, :lengths[i]]]
        roles = text.sentence_roles(p.question)
        sentence = 0
        for t, word in enumerate(words):
            got = classes[out[i, t]] if out[i, t] >= 0 else None
            if word in (".", "?"):
                assert got == roles[sentence]
                sentence += 1
            elif word in NAMES:
                assert got == ("person" if word == person
                               else "other person")
            else:
                assert got is None, (t, word)
    with pytest.raises(ValueError, match="not an ArithChain question"):
        text.story_probe_targets(tokenizer, ["Mia has 3 pens."], tokens[:1],
                                 lengths[:1])
