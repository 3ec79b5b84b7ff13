"""Experiment configs from the command line, and the results schema."""

import argparse
import dataclasses
import json

import numpy as np
import pytest

from qstar_jax.configs import (add_config_flags, config_from_args,
                               config_from_dict, config_to_dict)
from qstar_jax.results import (ResultsFormatError, markdown_table,
                               method_summary, plot_accuracy, read_results,
                               write_results)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    lam: float = 1.0
    budgets: tuple[int, ...] = (4, 8)
    weights: tuple[float, ...] = ()
    tags: tuple[str, ...] = ()
    limit: float = 2.0

    def __post_init__(self):
        if self.lam < 0:
            raise ValueError("lam must be >= 0")
        if self.lam > self.limit:
            raise ValueError("lam must be <= limit")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    seed: int = 0
    name: str = "main"
    cached: bool = True
    out: str | None = None
    inner: Inner = Inner()


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Outer())
    return config_from_args(Outer(), parser.parse_args(argv))


def test_every_leaf_field_is_a_typed_flag():
    assert _parse([]) == Outer()
    got = _parse(["--seed", "3", "--inner.lam", "0.5", "--inner.budgets",
                  "2,16", "--cached", "false", "--out", "x.json"])
    assert got == Outer(seed=3, cached=False, out="x.json",
                        inner=Inner(lam=0.5, budgets=(2, 16)))
    with pytest.raises(SystemExit):       # Not an int.
        _parse(["--seed", "three"])
    with pytest.raises(ValueError, match="lam"):  # The class's own check.
        _parse(["--inner.lam", "-1"])


def test_empty_tuple_flags_parse_items_by_their_field_type():
    got = _parse(["--inner.weights", "0.3,1", "--inner.tags", "a,b"])
    assert got.inner.weights == (0.3, 1.0)
    assert all(type(w) is float for w in got.inner.weights)
    assert got.inner.tags == ("a", "b")
    with pytest.raises(SystemExit):       # Not a float.
        _parse(["--inner.weights", "hot"])


def test_flags_of_one_config_are_checked_together():
    # lam = 5 alone breaks lam <= limit (and 'lam' sorts before 'limit'):
    # the two flags are applied together, then checked.
    got = _parse(["--inner.lam", "5", "--inner.limit", "6"])
    assert (got.inner.lam, got.inner.limit) == (5.0, 6.0)
    with pytest.raises(ValueError, match="limit"):
        _parse(["--inner.lam", "5"])


def test_config_dict_round_trip():
    config = Outer(seed=5, inner=Inner(budgets=(1, 2, 3)))
    data = json.loads(json.dumps(config_to_dict(config)))
    assert data["inner"]["budgets"] == [1, 2, 3]
    assert config_from_dict(Outer, data) == config


def test_results_round_trip_table_and_plot(tmp_path):
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    methods = {
        "greedy": method_summary(correct, tokens=[60] * 8,
                                 model_calls=[7] * 8, seconds=1.5),
        "best-of-4": method_summary(correct[::-1], tokens=[240] * 8,
                                    model_calls=[1] * 8, seconds=3.0,
                                    note="reranked")}
    assert methods["greedy"]["accuracy"] == 0.75
    lo, hi = methods["greedy"]["accuracy_ci95"]
    assert lo < 0.75 < hi
    path = str(tmp_path / "r.json")
    write_results(path, name="unit", config=config_to_dict(Outer()),
                  methods=methods, wall_time_s=4.5)
    content = read_results(path)
    assert content["methods"]["best-of-4"]["note"] == "reranked"
    assert content["machine"]["cpus"] >= 1
    assert len(content["machine"]["load_end"]) == 3
    table = markdown_table(content)
    assert "| greedy | 75.0% (" in table and "| 60 | 7.0 | 2 |" in table
    png = str(tmp_path / "r.png")
    plot_accuracy(content, png, groups={"sampling": ["greedy",
                                                    "best-of-4"]})
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_malformed_results_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsFormatError):
        read_results(str(bad))
    bad.write_text(json.dumps({"schema": "other", "version": 1}))
    with pytest.raises(ResultsFormatError, match="schema"):
        read_results(str(bad))
    bad.write_text(json.dumps({"schema": "qstar_jax.results", "version": 1,
                               "methods": {"m": {"n": 3}}}))
    with pytest.raises(ResultsFormatError, match="lacks"):
        read_results(str(bad))
