"""ArithChain task and its tokenizer."""

import collections
import dataclasses

import numpy as np
import pytest

from qstar_jax.tasks import arithchain
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer
from qstar_jax.tasks.arithchain import (ArithChain, ArithChainConfig, Program,
                                        make_problem, split_of,
                                        vocabulary_words)
from qstar_jax.tasks.base import Problem, Task
from qstar_jax.tasks.grading import grade

CONFIG = ArithChainConfig(num_train=3000, num_test=1000)
TASK = ArithChain(CONFIG)


def test_implements_task_protocol():
    assert isinstance(TASK, Task)
    assert TASK.step_delimiter == "\n"
    assert len(TASK.problems("train")) == 3000
    with pytest.raises(ValueError):
        TASK.problems("valid")


def test_deterministic_by_seed():
    a = ArithChain(CONFIG).problems("train")[:50]
    b = ArithChain(CONFIG).problems("train")[:50]
    assert a == b
    other = ArithChain(dataclasses.replace(CONFIG, seed=1)).problems("train")
    assert sum(x.question == y.question for x, y in zip(a, other[:50])) < 3
    assert make_problem(CONFIG, "test", 7) == TASK.problems("test")[7]


def test_splits_disjoint_by_construction():
    train, test = TASK.problems("train"), TASK.problems("test")
    assert all(split_of(p.program, CONFIG) == "train" for p in train)
    assert all(split_of(p.program, CONFIG) == "test" for p in test)
    train_texts = {p.question for p in train}
    assert not train_texts & {p.question for p in test}
    signatures = {p.program.signature() for p in train}
    assert not signatures & {p.program.signature() for p in test}


def test_problem_shape_and_ranges():
    for p in TASK.problems("train")[:500]:
        s = len(p.program.ops)
        assert CONFIG.num_steps_min <= s <= CONFIG.num_steps_max
        assert len(p.solution_steps) == s + 1
        assert p.solution_steps[-1] == f"#### {p.answer}"
        values = p.program.values()
        assert all(CONFIG.answer_min <= v <= CONFIG.answer_max
                   for v in values)
        assert CONFIG.start_min <= values[0] <= CONFIG.start_max
        assert p.question.endswith("?")
        assert p.question.count(".") == s + 1 + CONFIG.num_distractors
        for op, q in zip(p.program.ops, p.program.operands):
            assert str(q) in p.question
            if op == "*":
                assert 2 <= q <= CONFIG.mul_max
            else:
                assert CONFIG.operand_min <= q <= CONFIG.operand_max


def test_gold_solutions_grade_correct_for_1000_problems():
    for p in TASK.problems("test")[:1000]:
        solution = TASK.format_solution(p)
        assert grade(solution, p.answer).correct
        assert TASK.reward(p, solution) == 1.0
        assert TASK.extract_answer(solution) == p.answer
        assert TASK.is_finished(solution)
        assert not TASK.is_finished("\n".join(p.solution_steps[:-1]))
        assert all(TASK.step_correctness(p, solution))
        assert all(TASK.check_step(s) for s in p.solution_steps[:-1])


def test_answer_range_and_guess_rate():
    """Answers span 0..999; the most frequent one is < 1% of problems."""
    task = ArithChain(dataclasses.replace(CONFIG, num_train=20_000))
    counts = collections.Counter(p.answer for p in task.problems("train"))
    top, freq = counts.most_common(1)[0]
    assert freq / 20_000 < 0.01, (top, freq)
    values = [int(a) for a in counts.elements()]
    assert min(values) >= 0 and max(values) <= 999 and max(values) > 500


def test_complete_from_partial_states():
    for p in TASK.problems("test")[:200]:
        gold = list(p.solution_steps)
        for k in range(len(gold) + 1):
            rest = TASK.complete(p, gold[:k])
            assert rest == gold[k:]
            full = "\n".join(gold[:k] + rest)
            assert TASK.reward(p, full) == 1.0
        assert TASK.complete(p, "\n".join(gold[:1]) + "\n") == gold[1:]


def test_complete_repairs_a_wrong_step():
    p = TASK.problems("test")[3]
    wrong = p.solution_steps[0].rsplit("=", 1)[0] + "= 1234"
    rest = TASK.complete(p, [wrong])
    assert rest == list(p.solution_steps[1:])
    assert TASK.step_correctness(p, [wrong] + rest) == \
        [False] + [True] * len(rest)
    assert TASK.complete(p, ["#### 5"]) == []


def test_complete_plain_problem_by_uid():
    p = TASK.problems("train")[11]
    plain = Problem(uid=p.uid, question=p.question, answer=p.answer)
    assert TASK.complete(plain, []) == list(p.solution_steps)


def test_step_correctness_rules():
    program = Program(start=34, ops=("+", "-", "*"), operands=(12, 5, 2))
    p = make_problem(CONFIG, "train", 0)
    p = dataclasses.replace(p, program=program,
                            solution_steps=program.steps(), answer="82")
    check = TASK.step_correctness
    assert program.steps() == ("34 + 12 = 46", "46 - 5 = 41", "41 * 2 = 82",
                               "#### 82")
    assert check(p, "12+34=46\n46 - 5 = 41\n2 * 41 = 82\n#### 82") == \
        [True] * 4  # Commuted + and *, any spacing.
    assert check(p, "34 + 12 = 47\n47 - 5 = 42\n41 * 2 = 82\n#### 82") == \
        [False, False, True, True]  # Arithmetic slip; consistent but wrong.
    assert check(p, "34 + 12 = 46\n5 - 46 = -41") == [True, False]
    assert check(p, "34 + 13 = 47\n#### 47") == [False, False]
    assert check(p, "34 + 12 = 46\n46 - 5 = 41\n41 * 2 = 82\n#### 82\n1") \
        == [True, True, True, True, False]
    assert check(p, "34 + 12 = 46 apples") == [False]
    assert check(p, "") == []


def test_config_validation():
    with pytest.raises(ValueError):
        ArithChainConfig(num_steps_max=9)
    with pytest.raises(ValueError):
        ArithChainConfig(operations=("/",))
    for s in (2, 8):
        task = ArithChain(ArithChainConfig(num_steps_min=s, num_steps_max=s,
                                           num_test=20))
        assert all(len(p.program.ops) == s for p in task.problems("test"))


def test_tokenizer_round_trip(tmp_path):
    tok = ArithTokenizer(vocabulary_words())
    texts = [TASK.format_prompt(p) + TASK.format_solution(p)
             for p in TASK.problems("train")[:300]]
    texts += ["Zed has  7 qux!\n\n#### -3.5 ~ {x}", " ", "", "a\n b"]
    for text in texts:
        ids = tok.encode(text, add_bos=True, add_eos=True)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == text
    p = TASK.problems("train")[0]
    ids = tok.encode(TASK.format_prompt(p))
    assert len(ids) < len(TASK.format_prompt(p)) / 3  # Words are one token.
    assert tok.pad_id == 0 and {tok.bos_id, tok.eos_id} == {1, 2}
    assert len(tok.token_texts()) == tok.vocab_size
    assert tok.newline_mask().sum() == 1
    assert tok.token_texts()[int(np.argmax(tok.newline_mask()))] == "\n"
    assert tok.answer_marker_mask().sum() == 2
    path = str(tmp_path / "tok.json")
    tok.save(path)
    again = ArithTokenizer.load(path)
    assert again.token_texts() == tok.token_texts()
    assert again.encode(texts[0]) == tok.encode(texts[0])


def test_tokenizer_rejects_unknown_characters():
    tok = ArithTokenizer(vocabulary_words())
    for bad in ("tab\there", "caf\u00e9", "emoji \U0001F600"):
        with pytest.raises(ValueError, match="not in the tokenizer"):
            tok.encode(bad)
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


def test_continue_written_trusts_the_written_values():
    program = Program(start=34, ops=("+", "-", "*"), operands=(12, 5, 2))
    p = dataclasses.replace(make_problem(CONFIG, "train", 0),
                            program=program, solution_steps=program.steps(),
                            answer="82")
    gold = list(program.steps())
    for k in range(len(gold)):  # Correct prefixes: the gold remainder.
        rest = TASK.continue_written(p, gold[:k])
        assert rest == gold[k:]
        assert TASK.reward(p, "\n".join(gold[:k] + rest)) == 1.0
    assert TASK.continue_written(p, "34 + 12 = 46\n") == gold[1:]
    # A wrong middle value carries through: consistent but wrong.
    written = ["34 + 12 = 46", "46 - 5 = 40"]
    rest = TASK.continue_written(p, written)
    assert rest == ["40 * 2 = 80", "#### 80"]
    assert TASK.reward(p, "\n".join(written + rest)) == 0.0
    assert TASK.step_correctness(p, written + rest) == [True, False, False,
                                                        False]
    assert TASK.complete(p, written) == gold[2:]  # `complete` repairs.
    # More computations than operations: only the answer line is left.
    assert TASK.continue_written(p, gold[:3] + ["82 + 1 = 83"]) == ["#### 83"]
    # Nothing to continue from, or nothing left to add.
    assert TASK.continue_written(p, ["34 + 12 = 46 pens"]) == []
    assert TASK.continue_written(p, ["34 + 12 = 46", "I think"]) == []
    assert TASK.continue_written(p, ["#### 82"]) == []
    assert TASK.continue_written(p, gold) == []


def test_continue_written_plain_problem_by_uid():
    p = TASK.problems("train")[11]
    plain = Problem(uid=p.uid, question=p.question, answer=p.answer)
    assert TASK.continue_written(plain, []) == list(p.solution_steps)


def test_step_templates_match_the_program_and_the_story():
    task = ArithChain(ArithChainConfig())
    problem = task.problems("train")[0]
    templates = task.step_templates(problem)
    program = task.program(problem)
    assert len(templates) == len(program.ops)
    for op, t in zip(program.ops, templates):
        assert t in {"+": arithchain._ADD, "-": arithchain._SUB,
                     "*": arithchain._MUL}[op]
    # Every template is found across the splits.
    seen = collections.Counter()
    for split in ("train", "test"):
        for i in range(300):
            p = task.problems(split)[i]
            seen.update(task.step_templates(p))
    assert set(seen) == set(arithchain._ADD + arithchain._SUB
                            + arithchain._MUL)


def test_step_templates_tell_who_gives_to_whom():
    task = ArithChain(ArithChainConfig())
    story = ("Mia has 34 pens. Leo gives 12 pens to Mia. Leo has 9 cups. "
             "Mia gives 5 pens to Sam. How many pens does Mia have now?")

    def problem(ops):
        return arithchain.ArithChainProblem(
            uid="x", question=story, answer="41",
            solution_steps=("34 + 12 = 46", "46 - 5 = 41", "#### 41"),
            program=Program(start=34, ops=ops, operands=(12, 5)))

    assert task.step_templates(problem(("+", "-"))) == (
        "{x} gives {q} {o} to {p}.", "{p} gives {q} {o} to {x}.")
    with pytest.raises(ValueError, match="parses to"):
        task.step_templates(problem(("+", "+")))
