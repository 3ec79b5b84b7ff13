"""GSM8K with steps as a TFDS dataset, readable without TensorFlow.

The ``gsm8k_steps`` builder mirrors TFDS' own ``gsm8k`` but reads the jsonl
files from a manual directory (so it works offline) and adds the parsed
``steps`` and ``annotations`` plus the problem ``uid``. Rows are parsed by
:mod:`qstar_jax.tasks.gsm8k` (same skipping, counting and warning rules). The
data is written as ArrayRecord and read through the random-access data source,
which works without TensorFlow (``tfds.load`` and ``as_dataset`` need
TensorFlow and are not used)::

    builder = build_gsm8k_tfds("/tmp/tfds")
    source = gsm8k_data_source("/tmp/tfds", "test")
    problems = grain.MapDataset.source(source).map(decode_record)

Importing this module registers the builder with TFDS, and imports
``tensorflow_datasets`` (about 0.6 s), so :mod:`qstar_jax.tasks` does not
import it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import tensorflow_datasets as tfds
from etils import epath

from qstar_jax.tasks import gsm8k

_CITATION: Final = """\
@article{cobbe2021gsm8k,
  title={Training Verifiers to Solve Math Word Problems},
  author={Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and
          Chen, Mark and Jun, Heewoo and Kaiser, Lukasz and Plappert, Matthias
          and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro and
          Hesse, Christopher and Schulman, John},
  journal={arXiv preprint arXiv:2110.14168},
  year={2021}
}"""
_TEXT_FIELDS: Final = ("uid", "question", "answer", "short_answer")
_LIST_FIELDS: Final = ("steps", "annotations")


class Gsm8kSteps(tfds.core.GeneratorBasedBuilder):
    """GSM8K math word problems with solutions split into reasoning steps."""

    name = "gsm8k_steps"
    # TFDS' default lookup of this path imports the ``importlib_resources``
    # backport, which is not installed (nor needed on Python >= 3.9).
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put GSM8K's train.jsonl and test.jsonl (from
    https://github.com/openai/grade-school-math, grade_school_math/data/) in
    the manual directory. The package ships copies in
    qstar_jax/tasks/data/gsm8k/, which build_gsm8k_tfds uses by default.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        """Returns the dataset metadata and features (built directly)."""
        text = tfds.features.Text
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Grade-school math word problems (GSM8K) with the gold "
                         "solution split into steps and calculator annotations."),
            features=tfds.features.FeaturesDict({
                "uid": text(),
                "question": text(),
                "answer": text(),
                "steps": tfds.features.Sequence(text()),
                "annotations": tfds.features.Sequence(text()),
                "short_answer": text(),
            }),
            homepage="https://github.com/openai/grade-school-math",
            citation=_CITATION,
            license="MIT",
            disable_shuffling=True,  # Keep file order: record i is row i.
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        """Returns one example generator per split, reading the manual dir."""
        manual_dir = epath.Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual_dir / f"{split}.jsonl", split)
                for split in gsm8k.SPLITS}

    def _generate_examples(
            self, path: epath.Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields ``(uid, features)`` for each valid row of one jsonl file."""
        result = gsm8k.parse_jsonl(path.read_bytes(), split, os.fspath(path))
        gsm8k.warn_skipped(result)
        if not result.problems:
            raise ValueError(f"no valid GSM8K rows in {result.source}")
        for problem in result.problems:
            yield problem.uid, {
                **{field: getattr(problem, field) for field in _TEXT_FIELDS},
                **{field: list(getattr(problem, field)) for field in _LIST_FIELDS},
            }


def build_gsm8k_tfds(
        data_dir: str | os.PathLike[str],
        manual_dir: str | os.PathLike[str] | None = None) -> Gsm8kSteps:
    """Builds (or reuses) the ``gsm8k_steps`` dataset as ArrayRecord files.

    Args:
        data_dir: TFDS data directory to write to.
        manual_dir: Directory holding ``train.jsonl`` and ``test.jsonl``;
            defaults to the copies packaged with ``qstar_jax``.

    Returns:
        The prepared builder.
    """
    builder = Gsm8kSteps(data_dir=os.fspath(data_dir), file_format="array_record")
    with contextlib.ExitStack() as stack:
        if manual_dir is None:
            manual_dir = stack.enter_context(
                importlib.resources.as_file(gsm8k.packaged_data_dir()))
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir),
                                              try_download_gcs=False)
        builder.download_and_prepare(download_config=config, file_format="array_record")
    return builder


def gsm8k_data_source(data_dir: str | os.PathLike[str], split: str) -> Sequence[Any]:
    """Returns the random-access data source of a prepared split.

    Args:
        data_dir: The TFDS data directory given to :func:`build_gsm8k_tfds`.
        split: ``"train"`` or ``"test"`` (TFDS split slicing such as
            ``"test[:10]"`` also works).

    Returns:
        An ``ArrayRecordDataSource``: ``len()`` and ``source[i]`` give one
        record dict whose text fields are ``bytes``. It can be wrapped with
        ``grain.MapDataset.source``.
    """
    builder = Gsm8kSteps(data_dir=os.fspath(data_dir), file_format="array_record")
    return builder.as_data_source(split=split)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_record(record: Mapping[str, Any]) -> gsm8k.Gsm8kProblem:
    """Turns one data-source record back into a :class:`Gsm8kProblem`.

    Args:
        record: A record from :func:`gsm8k_data_source`; text values are
            ``bytes`` and sequences are arrays or lists of ``bytes``.

    Returns:
        The problem, equal to the one :func:`gsm8k.load_gsm8k` gives.
    """
    texts = {field: _text(record[field]) for field in _TEXT_FIELDS}
    lists = {field: tuple(_text(v) for v in record[field]) for field in _LIST_FIELDS}
    return gsm8k.Gsm8kProblem(**texts, **lists)
