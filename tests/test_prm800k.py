"""PRM800K reader: the handmade sample file and malformed lines."""

import json
import os

import pytest

from qstar_jax.learning.prm800k import (Prm800kExample, Prm800kFormatError,
                                        iter_prm800k, read_prm800k,
                                        step_labels)

SAMPLE = os.path.join(os.path.dirname(__file__), "fixtures",
                      "prm800k_sample.jsonl")


def test_sample_trajectories_and_ratings():
    examples = read_prm800k(SAMPLE)
    assert [e.line for e in examples] == [1, 2, 3, 4, 5]
    first, human, error, quality, gave_up = examples
    assert first == Prm800kExample(
        problem="What is $3 \\cdot 4 + 5$?", ground_truth_answer="17",
        steps=("I need $3 \\cdot 4 + 5$.", "Multiplication comes first.",
               "$3 \\cdot 4 = 12$ and $12 + 5 = 17$.\n\n# Answer\n\n17"),
        ratings=(1, 0, 1), finish_reason="solution", line=1)
    # Chosen index 1 of three alternatives, then a human step (rating null
    # read as +1), then the final chosen step.
    assert human.steps == ("Divide both sides by 2.", "So $x = 10 / 2$.",
                           "$10 / 2 = 5$, so $x = 5$.", "# Answer\n\n5")
    assert human.ratings == (1, 0, 1, 1)
    assert human.ground_truth_answer == "5"
    # A null choice with one completion ends the trajectory with that step.
    assert error.steps == ("The sum of angles in a triangle is $180^\\circ$.",
                           "So the third angle is $180 - 50 - 60 = 80$ "
                           "degrees.")
    assert error.ratings == (1, -1)
    assert error.finish_reason == "found_error"
    assert quality.is_quality_control and quality.ratings == (0, 1)
    assert not any(e.is_quality_control for e in examples if e is not quality)
    # A null choice among several alternatives: the trajectory stops before.
    assert gave_up.steps == ("The primes below 10 are 2, 3, 5, 7.",)
    assert gave_up.ratings == (None,)
    assert gave_up.finish_reason == "give_up"


def test_skip_quality_control_and_iterator():
    kept = read_prm800k(SAMPLE, skip_quality_control=True)
    assert [e.line for e in kept] == [1, 2, 3, 5]
    iterator = iter_prm800k(SAMPLE)
    assert next(iterator).line == 1
    assert list(iterator) == read_prm800k(SAMPLE)[1:]


def test_step_labels():
    first, human, error, quality, gave_up = read_prm800k(SAMPLE)
    assert step_labels(first) == [1.0, 1.0, 1.0]
    assert step_labels(first, neutral_as=0.0) == [1.0, 0.0, 1.0]
    assert step_labels(human, neutral_as=0.5) == [1.0, 0.5, 1.0, 1.0]
    assert step_labels(error) == [1.0, 0.0]
    with pytest.raises(ValueError, match="step 0 .* line 5 is unrated"):
        step_labels(gave_up)


def _record(steps=None, finish="solution"):
    """A minimal valid record with the given label steps."""
    if steps is None:
        steps = [{"completions": [{"text": "a", "rating": 1}],
                  "human_completion": None, "chosen_completion": 0}]
    return {"is_quality_control_question": False,
            "question": {"problem": "p", "ground_truth_answer": "1"},
            "label": {"steps": steps, "finish_reason": finish}}


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _bad_step(**changes):
    step = {"completions": [{"text": "a", "rating": 1}],
            "human_completion": None, "chosen_completion": 0}
    step.update(changes)
    return _record([step])


MALFORMED = {
    "bad JSON": "{not json",
    "not an object": "[1, 2]",
    "deep nesting": "[" * 100000 + "]" * 100000,
    "NaN constant": json.dumps(_record()).replace('"1"}', '"1", "x": NaN}'),
    "missing question": json.dumps({"label": _record()["label"]}),
    "missing problem": json.dumps(
        {**_record(), "question": {"ground_truth_answer": "1"}}),
    "missing rating": json.dumps(_bad_step(completions=[{"text": "a"}])),
    "missing chosen": json.dumps(_record([{"completions": [
        {"text": "a", "rating": 1}]}])),
    "rating 2": json.dumps(_bad_step(completions=[{"text": "a",
                                                   "rating": 2}])),
    "rating 1.0": json.dumps(_bad_step(completions=[{"text": "a",
                                                     "rating": 1.0}])),
    "rating true": json.dumps(_bad_step(completions=[{"text": "a",
                                                      "rating": True}])),
    "chosen out of range": json.dumps(_bad_step(chosen_completion=1)),
    "chosen negative": json.dumps(_bad_step(chosen_completion=-1)),
    "chosen string": json.dumps(_bad_step(chosen_completion="0")),
    "empty completions": json.dumps(_bad_step(completions=[])),
    "text not string": json.dumps(_bad_step(completions=[{"text": 3,
                                                          "rating": 1}])),
    "unknown finish": json.dumps(_record(finish="done")),
    "null step not last": json.dumps(_record([
        {"completions": [{"text": "a", "rating": -1}],
         "human_completion": None, "chosen_completion": None},
        {"completions": [{"text": "b", "rating": 1}],
         "human_completion": None, "chosen_completion": 0}])),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_line_names_file_and_line(tmp_path, case):
    good = json.dumps(_record())
    path = _write(tmp_path, [good, "", MALFORMED[case], good])
    with pytest.raises(Prm800kFormatError) as info:
        read_prm800k(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert isinstance(info.value, ValueError)


def test_iterator_yields_lines_before_the_bad_one(tmp_path):
    good = json.dumps(_record())
    path = _write(tmp_path, [good, "{oops"])
    iterator = iter_prm800k(path)
    assert next(iterator).line == 1
    with pytest.raises(Prm800kFormatError, match=":2: bad JSON"):
        next(iterator)


def test_not_utf8(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(_record()).encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(Prm800kFormatError, match=":2: not UTF-8"):
        read_prm800k(path)


def test_nothing_is_evaluated(tmp_path):
    code = "__import__('os').system('false')"
    record = _record([{"completions": [{"text": code, "rating": 0}],
                       "human_completion": None, "chosen_completion": 0}])
    record["question"]["problem"] = code
    (example,) = read_prm800k(_write(tmp_path, [json.dumps(record)]))
    assert example.steps == (code,) and example.problem == code


def test_human_completion_as_string(tmp_path):
    record = _record([{"completions": [{"text": "x", "rating": -1}],
                       "human_completion": "by hand",
                       "chosen_completion": None}])
    (example,) = read_prm800k(_write(tmp_path, [json.dumps(record)]))
    assert example.steps == ("by hand",) and example.ratings == (1,)
