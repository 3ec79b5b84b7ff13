"""Prompt sources of self-improvement (learning.imagination and friends).

Each source is checked against an independent reference: the ArithChain
generator itself (parse_question must invert it), the reference task's split
hash recomputed here, plain-Python arithmetic for GSM8K substitutions.
"""

import random
import re
from fractions import Fraction

import pytest

from qstar_jax.learning import arithchain_text as text
from qstar_jax.learning import imagination as im
from qstar_jax.learning.gsm8k_substitution import (gsm8k_substitutions,
                                                   question_template,
                                                   substitute_numbers)
from qstar_jax.tasks.arithchain import (ArithChain, ArithChainConfig,
                                        Program, make_problem, split_of,
                                        vocabulary_words)
from qstar_jax.tasks.gsm8k import Gsm8kProblem, load_gsm8k

REFERENCE = ArithChainConfig()


def test_parse_question_inverts_the_generator():
    """Every generated question of both splits, 2..8 steps, parses back to
    its program."""
    for steps in (2, 5, 8):
        config = ArithChainConfig(num_steps_min=steps, num_steps_max=steps,
                                  num_distractors=3, seed=7)
        for split in ("train", "test"):
            for i in range(40):
                p = make_problem(config, split, i)
                assert text.parse_question(p.question) == p.program


def test_parse_question_rejects_non_problems():
    good = make_problem(REFERENCE, "train", 0).question
    person = good.split()[0]
    broken = [
        "", "Mia has 5 apples.", good.replace("?", "."),
        good + " And more", good.replace(f"{person} ", "Leo ", 1)
        if person != "Leo" else good.replace("Leo ", "Mia ", 1),
        (good.replace(" 1", " 01", 1) if " 1" in good
         else good + "x"),
        "Mia has 5 apples. Mia eats 2 apples. How many apples does Mia "
        "have now?",
    ]
    for t in broken:
        assert text.parse_question(t) is None, t
    assert text.parse_question(good, min_steps=7) is None  # 6 steps.


def test_render_question_extra_templates_round_trip():
    words = set(vocabulary_words())
    used_extra = set()
    rng = random.Random(0)
    for i in range(300):
        program = make_problem(REFERENCE, "train", i).program
        question = text.render_question(program, rng, templates="extra",
                                        num_distractors=i % 4)
        assert text.parse_question(question) == program, question
        assert set(question.replace(".", " ").replace("?", " ").split()
                   ) - words <= {str(n) for n in range(1000)}
        for role, forms in text.EXTRA_TEMPLATES.items():
            for form in forms:
                head = form.split("{q}")[0].split("{o}")[0]
                if head.replace("{p}", "").replace("{x}", "").strip() and \
                        any(head.format(p=n, x=m) in question
                            for n in ("Mia", "Leo", "Sam", "Ava", "Ben")
                            for m in ("Zoe", "Max", "Tom")):
                    used_extra.add(form)
    assert used_extra  # The extra forms do occur.
    with pytest.raises(ValueError, match="templates"):
        text.render_question(program, rng, templates="fancy")


def test_arithchain_variations_never_held_out():
    variations = (
        im.ArithChainVariation(),
        im.ArithChainVariation(num_steps_min=3, num_steps_max=8,
                               templates="extra", distractors_min=0,
                               distractors_max=3, weight=2.0),
        im.ArithChainVariation(operand_max=40, start_max=50, weight=1.0),
    )
    out = im.arithchain_variations(variations, 200, seed=3)
    assert len(out.prompts) == 200
    assert [p.source for p in out.prompts].count(
        "arithchain_variation_1") == 100
    held_out = {make_problem(REFERENCE, "test", i).program.signature()
                for i in range(REFERENCE.num_test)}
    signatures = set()
    for p in out.prompts:
        program = text.parse_question(p.question)
        assert program is not None, p.question
        assert split_of(program, REFERENCE) == "train"
        assert program.signature() not in held_out
        assert out.answers[p.uid] == str(program.answer)
        signatures.add(program.signature())
        assert not hasattr(p, "answer")
    assert len(signatures) == 200
    # About 10% of draws land in the held-out part of the program space.
    assert out.rejected["held_out"] > 0
    again = im.arithchain_variations(variations, 200, seed=3)
    assert again.prompts == out.prompts
    other = im.arithchain_variations(variations, 200, seed=4)
    assert {p.question for p in other.prompts}.isdisjoint(
        {p.question for p in out.prompts})
    excluded = im.arithchain_variations(variations[:1], 20, seed=3,
                                        exclude=frozenset(signatures))
    assert all(text.parse_question(p.question).signature() not in signatures
               for p in excluded.prompts)


def test_allocate_and_combine(tmp_path):
    assert im.allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert im.allocate(7, [2, 0, 1]) == [5, 0, 2]
    with pytest.raises(ValueError, match="allocate"):
        im.allocate(3, [0, 0])
    a = im.arithchain_variations([im.ArithChainVariation()], 3, seed=1)
    b = im.arithchain_variations([im.ArithChainVariation()], 2, seed=2)
    both = im.combine(a, b)
    assert len(both.prompts) == 5
    with pytest.raises(ValueError, match="twice"):
        im.combine(a, a)
    im.write_imagined(str(tmp_path), both)
    assert tuple(im.read_prompts(str(tmp_path))) == both.prompts
    assert im.read_answers(str(tmp_path)) == both.answers
    problem = im.as_problem(both.prompts[0])
    assert problem.answer == ""
    assert problem.question == both.prompts[0].question
    with pytest.raises(TypeError, match="as_problem"):
        im.as_problem(make_problem(REFERENCE, "train", 0))


def test_arithchain_parser_flags_held_out():
    parse = im.arithchain_parser(REFERENCE)
    test_problem = make_problem(REFERENCE, "test", 5)
    train_problem = make_problem(REFERENCE, "train", 5)
    assert parse(test_problem.question).held_out
    seen = parse(train_problem.question)
    assert not seen.held_out and seen.answer == train_problem.answer
    assert seen.key == train_problem.program.signature()
    assert parse("Mia has 5 apples. How many apples does Mia have?") is None
    over = Program(start=900, ops=("*", "+"), operands=(2, 5))
    assert parse(text.render_question(over, random.Random(0))) is None


def test_policy_written_prompts_are_parsed_problems():
    """The shipped policy continues few-shot question lists; every kept line
    is a parsed, non-held-out, new problem; the counts add up."""
    from qstar_jax.tasks.tiny_policy import load_tiny_policy
    policy, tokenizer, config = load_tiny_policy()
    task = ArithChain(config)
    examples = [p.question for p in task.problems("train")[:30]]
    parse = im.arithchain_parser(config)
    kwargs = dict(attempts=24, seed=5, shots=2, batch_size=24,
                  prompt_width=192, max_tokens=64)
    out = im.policy_written_prompts(policy, tokenizer, examples, parse,
                                    **kwargs)
    assert len(out.prompts) + sum(out.rejected.values()) == 24
    example_keys = {parse(e).key for e in examples}
    for p in out.prompts:
        parsed = parse(p.question)
        assert parsed is not None and not parsed.held_out
        assert out.answers[p.uid] == parsed.answer
    again = im.policy_written_prompts(policy, tokenizer, examples, parse,
                                      **kwargs)
    assert again.prompts == out.prompts
    # Excluding what was written (and the examples) keeps none of it.
    keys = frozenset({parse(p.question).key for p in out.prompts}
                     | example_keys)
    excluded = im.policy_written_prompts(policy, tokenizer, examples, parse,
                                         exclude=keys, **kwargs)
    assert not excluded.prompts
    with pytest.raises(ValueError, match="shots"):
        im.policy_written_prompts(policy, tokenizer, examples[:1], parse,
                                  attempts=1, seed=0, shots=2)


def test_substitute_numbers_recomputes_answers():
    natalia = Gsm8kProblem(
        uid="train-0",
        question="Natalia sold clips to 48 of her friends in April, and "
                 "then she sold half as many clips in May. How many clips "
                 "did Natalia sell altogether in April and May?",
        answer="", steps=(), annotations=("48/2=24", "48+24=72"),
        short_answer="72")
    made = 0
    for seed in range(40):
        sub, reason = substitute_numbers(natalia, random.Random(seed))
        if sub is None:  # An odd n gives half a clip: refused.
            assert reason == "invalid_values"
            continue
        made += 1
        n = sub.replaced[48]
        assert n % 2 == 0 and 24 <= n <= 96 and n != 48
        assert f" {n} " in sub.question and "48" not in sub.question
        assert sub.answer == str(n + n // 2)
        assert sub.annotations == (f"{n}/2={n // 2}", f"{n}+{n // 2}="
                                   f"{n + n // 2}")
    assert made >= 10
    constant = Gsm8kProblem(uid="x", question="A week has 7 days. How many?",
                            answer="", steps=(), annotations=("7*1=7",),
                            short_answer="7")
    assert substitute_numbers(constant, random.Random(0)) == (
        None, "no_candidates")
    bad = Gsm8kProblem(uid="y", question="Tom has 5 cats and 6 dogs.",
                       answer="", steps=(), annotations=("5+6=12",),
                       short_answer="12")
    assert substitute_numbers(bad, random.Random(0)) == (None,
                                                         "annotations")


def _plain_value(expr: str) -> Fraction:
    """Reference arithmetic: Python's own on a checked digits-and-operators
    string (test only; the library uses the safe calculator)."""
    assert re.fullmatch(r"[0-9+\-*/(). ]+", expr), expr
    return Fraction(eval(re.sub(r"(\d*\.?\d+)", r"Fraction('\1')",
                                expr), {"Fraction": Fraction}))


def test_substitutions_check_out_on_the_dataset():
    """On real GSM8K training problems every recomputed annotation is right
    by plain arithmetic, the answer is the last result equal to the old
    answer's, and only the replaced numbers changed."""
    train = load_gsm8k("train")[:300]
    made = 0
    for i, problem in enumerate(train):
        sub, reason = substitute_numbers(problem, random.Random(i))
        if sub is None:
            continue
        made += 1
        for annotation in sub.annotations:
            expr, result = annotation.rsplit("=", 1)
            assert abs(float(_plain_value(expr)) - float(result)) < 1e-6
        old = [float(a.rsplit("=", 1)[1]) for a in problem.annotations]
        last = max(j for j, r in enumerate(old)
                   if abs(r - float(problem.short_answer.replace(",", "")))
                   < 1e-9)
        assert sub.answer == sub.annotations[last].rsplit("=", 1)[1]
        old_numbers = re.findall(r"\d+", problem.question)
        new_numbers = re.findall(r"\d+", sub.question)
        assert len(old_numbers) == len(new_numbers)
        for a, b in zip(old_numbers, new_numbers):
            assert a == b or sub.replaced[int(a)] == int(b)
    assert made >= 60


def test_gsm8k_substitutions_protect_held_out():
    train = load_gsm8k("train")[:400]
    test = load_gsm8k("test")
    # A training question declared held out must not be used.
    protected = [p.question for p in test] + [train[0].question]
    out = gsm8k_substitutions(train, 60, seed=2, held_out=protected)
    assert 0 < len(out.prompts) <= 60
    assert out.rejected["held_out"] >= 1
    templates = {question_template(q) for q in protected}
    for p in out.prompts:
        assert question_template(p.question) not in templates
        assert not p.uid.startswith(f"gsm8k_substitution-s2-{train[0].uid}-")
    assert len({p.question for p in out.prompts}) == len(out.prompts)
    again = gsm8k_substitutions(train, 60, seed=2, held_out=protected)
    assert again.prompts == out.prompts and again.answers == out.answers
