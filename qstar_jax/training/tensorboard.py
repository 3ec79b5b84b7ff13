"""Training scalars as TensorBoard event files, and a reader for them.

`ScalarLog(directory)` writes scalars through tensorboardX's
`SummaryWriter` (one event file per writer; view with
`tensorboard --logdir <run dir>`). `read_scalars(directory)` reads every
event file of a directory back, checking the TFRecord framing (length and
data CRC-32C), with tensorboardX's own `Event` protocol buffer: no
TensorFlow or TensorBoard install needed.

Example:
  >>> with ScalarLog("runs/x/tensorboard") as log:
  ...     log.write({"train/loss": 0.5}, step=10)
  >>> read_scalars("runs/x/tensorboard")["train/loss"]
  [(10, 0.5)]
"""

from __future__ import annotations

import os
import struct
from typing import Mapping


class ScalarLog:
    """Writes scalars to TensorBoard event files in `directory`."""

    def __init__(self, directory: str):
        from tensorboardX import SummaryWriter
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._writer = SummaryWriter(logdir=directory)

    def write(self, scalars: Mapping[str, float], step: int) -> None:
        """Adds every scalar under its tag at `step` and flushes."""
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _records(path: str):
    """The data of every TFRecord in an event file (CRCs checked)."""
    from tensorboardX.record_writer import masked_crc32c
    with open(path, "rb") as f:
        content = f.read()
    at = 0
    while at < len(content):
        header = content[at:at + 8]
        length, = struct.unpack("Q", header)
        header_crc, = struct.unpack("I", content[at + 8:at + 12])
        data = content[at + 12:at + 12 + length]
        data_crc, = struct.unpack(
            "I", content[at + 12 + length:at + 16 + length])
        if (masked_crc32c(header) != header_crc
                or masked_crc32c(data) != data_crc):
            raise ValueError(f"read_scalars: {path}: a corrupt record at "
                             f"byte {at}")
        yield data
        at += 16 + length


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar in the directory's event
    files (files in name order, which is creation order; records in file
    order).

    Raises:
      FileNotFoundError: no event file in `directory`.
      ValueError: a record whose CRC does not match.
    """
    from tensorboardX.proto.event_pb2 import Event
    names = sorted(n for n in os.listdir(directory)
                   if n.startswith("events.out.tfevents"))
    if not names:
        raise FileNotFoundError(f"read_scalars: no event file in "
                                f"{directory}")
    out: dict[str, list[tuple[int, float]]] = {}
    for name in names:
        for data in _records(os.path.join(directory, name)):
            event = Event.FromString(data)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append(
                        (int(event.step), float(value.simple_value)))
    return out
