"""Tests for the packaged GSM8K data, its loader and the TFDS builder."""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import grain
import pytest

from qstar_jax.tasks import gsm8k
from qstar_jax.tasks.gsm8k import (
    Gsm8kProblem,
    MalformedRowsWarning,
    load_gsm8k,
    load_gsm8k_with_stats,
    parse_answer,
)

_DATA_DIR = pathlib.Path(gsm8k.__file__).parent / "data" / "gsm8k"


def _row(question: str, answer: str) -> str:
    return json.dumps({"question": question, "answer": answer})


# --- The packaged files -------------------------------------------------------

@pytest.mark.parametrize("split, count", [("train", 7473), ("test", 1319)])
def test_packaged_split_counts(split: str, count: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # The gold files have no malformed rows.
        result = load_gsm8k_with_stats(split)
    assert len(result.problems) == count
    assert result.n_skipped == 0 and result.skipped_lines == ()
    assert len({p.uid for p in result.problems}) == count
    assert result.problems[0].uid == f"{split}-0"
    assert result.problems[-1].uid == f"{split}-{count - 1}"


def test_packaged_files_ship_license_and_readme() -> None:
    assert "MIT License" in (_DATA_DIR / "LICENSE").read_text()
    readme = (_DATA_DIR / "README.md").read_text()
    for needle in ("3101c7d5072418e28b9008a6636bde82a006892c", "2110.14168",
                   "@article{cobbe2021gsm8k", "MIT"):
        assert needle in readme


def test_first_train_problem_is_parsed() -> None:
    problem = load_gsm8k("train")[0]
    assert problem == Gsm8kProblem(
        uid="train-0",
        question=("Natalia sold clips to 48 of her friends in April, and then she sold "
                  "half as many clips in May. How many clips did Natalia sell "
                  "altogether in April and May?"),
        answer=("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
                "<<48+24=72>>72 clips altogether in April and May.\n#### 72"),
        steps=("Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May."),
        annotations=("48/2=24", "48+24=72"),
        short_answer="72",
    )


def test_all_problems_are_consistent() -> None:
    problems = load_gsm8k("train") + load_gsm8k("test")
    for p in problems:
        assert p.steps and all(s and not s.startswith("####") for s in p.steps)
        assert len(p.annotations) == p.answer.count("<<")
        assert p.answer.rstrip().endswith(f"#### {p.short_answer}")
    assert sum(len(p.annotations) for p in problems) == 27998


# --- parse_answer ------------------------------------------------------------

def test_parse_answer_drops_blank_lines_and_the_hash_line() -> None:
    steps, annotations, short = parse_answer(
        "  A <<1+1=2>>2 and <<2*3=6>>6.\n\nB.\n#### 1,080\n\n")
    assert steps == ("A <<1+1=2>>2 and <<2*3=6>>6.", "B.")
    assert annotations == ("1+1=2", "2*3=6")
    assert short == "1,080"


def test_parse_answer_without_steps() -> None:
    assert parse_answer("#### 5") == ((), (), "5")


@pytest.mark.parametrize("answer, message", [
    ("no hash line", "0 '####' lines"),
    ("step\n####   ", "empty"),
    ("#### 5\nmore text", "after"),
    ("#### 5\n#### 6", "2 '####' lines"),
    ("", "0 '####' lines"),
])
def test_parse_answer_rejects(answer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_answer(answer)


# --- Loading files with malformed rows ----------------------------------------

_GOOD_1 = _row("What is 1+1?", "1+1 = <<1+1=2>>2\n#### 2")
_GOOD_2 = _row("What is 2*3?", "2*3 = <<2*3=6>>6\n#### 6")
_MALFORMED = [
    '{"question": "bad json", "answer": ',          # line 2
    json.dumps(["question", "answer"]),               # line 3: not an object
    json.dumps({"question": "no answer"}),            # line 4
    json.dumps({"question": 7, "answer": "#### 7"}),  # line 5: non-string
    _row("no hash line", "just text"),                # line 6
    _row("   ", "#### 1"),                            # line 7: empty question
]


def _write_malformed(path: pathlib.Path) -> None:
    lines = [_GOOD_1, *_MALFORMED]
    data = "\n".join(lines).encode() + b"\n\xff\xfe{not utf-8}\n\n   \n" + _GOOD_2.encode()
    path.write_bytes(data)  # Line 8 is not UTF-8, lines 9-10 are blank, 11 is good.


def test_malformed_rows_are_skipped_counted_and_warned_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rows.jsonl"
    _write_malformed(path)
    with pytest.warns(MalformedRowsWarning) as record:
        result = load_gsm8k_with_stats("custom", path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 7 malformed row(s)" in message
    assert "line 2, 3, 4, 5, 6, ..." in message
    assert result.n_skipped == 7
    assert result.skipped_lines == (2, 3, 4, 5, 6, 7, 8)
    assert [p.uid for p in result.problems] == ["custom-0", "custom-10"]
    assert [p.short_answer for p in result.problems] == ["2", "6"]
    with pytest.warns(MalformedRowsWarning):
        assert load_gsm8k("custom", str(path)) == list(result.problems)


def test_parse_jsonl_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = gsm8k.parse_jsonl("\n".join([_GOOD_1, *_MALFORMED]), "s")
    assert len(result.problems) == 1 and result.n_skipped == 6


def test_empty_file_is_an_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match="no valid GSM8K rows"):
        load_gsm8k("train", path)


def test_file_with_only_malformed_rows_is_an_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(_MALFORMED))
    with pytest.warns(MalformedRowsWarning), pytest.raises(ValueError, match="no valid"):
        load_gsm8k("train", path)


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown GSM8K split"):
        load_gsm8k("validation")


# --- TFDS builder (ArrayRecord + data source + grain, no TensorFlow) ----------

def test_tfds_builder_round_trip_without_tensorflow(tmp_path: pathlib.Path) -> None:
    from qstar_jax.tasks import gsm8k_tfds  # Imports tensorflow_datasets.

    manual = tmp_path / "manual"
    manual.mkdir()
    train_lines = (_DATA_DIR / "train.jsonl").read_text().splitlines()
    test_lines = (_DATA_DIR / "test.jsonl").read_text().splitlines()
    (manual / "train.jsonl").write_text(
        "\n".join(train_lines[:3] + ['{"question": "broken"'] + train_lines[3:5]) + "\n")
    (manual / "test.jsonl").write_text("\n".join(test_lines[:3]) + "\n")
    expected = {split: load_gsm8k(split, manual / f"{split}.jsonl")
                for split in ("test",)}
    with pytest.warns(MalformedRowsWarning):
        expected["train"] = load_gsm8k("train", manual / "train.jsonl")
    assert [p.uid for p in expected["train"]] == [
        "train-0", "train-1", "train-2", "train-4", "train-5"]

    data_dir = tmp_path / "tfds"
    with pytest.warns(MalformedRowsWarning, match="skipped 1 malformed"):
        builder = gsm8k_tfds.build_gsm8k_tfds(data_dir, manual_dir=manual)
    assert builder.info.splits["train"].num_examples == 5
    assert builder.info.splits["test"].num_examples == 3
    assert sorted(p.name for p in data_dir.glob("gsm8k_steps/1.0.0/*.array_record*")) == [
        "gsm8k_steps-test.array_record-00000-of-00001",
        "gsm8k_steps-train.array_record-00000-of-00001"]

    for split in ("train", "test"):
        source = gsm8k_tfds.gsm8k_data_source(data_dir, split)
        assert len(source) == len(expected[split])
        record = source[0]
        assert isinstance(record["question"], bytes)  # Text comes back as bytes.
        assert [gsm8k_tfds.decode_record(source[i]) for i in range(len(source))] == \
            expected[split]
        dataset = grain.MapDataset.source(source).map(gsm8k_tfds.decode_record)
        assert list(dataset) == expected[split]
        shuffled = grain.MapDataset.source(source).shuffle(seed=0).map(
            gsm8k_tfds.decode_record)
        assert sorted(p.uid for p in shuffled) == sorted(p.uid for p in expected[split])

    assert "tensorflow" not in sys.modules  # Built and read without TensorFlow.
