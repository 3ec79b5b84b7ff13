"""Two JAX processes on localhost (gloo collectives) against one process.

tests/multiprocess_worker.py runs in two processes with two CPU devices
each, joined by `distributed.initialize` into one 4-device run: a
('data' 2, 'model' 2) mesh whose 'data' axis spans the processes. It runs a
Q* search with tensor-parallel models and four FSDP critic training steps;
a third process runs the same work on one device. Every process must hold
the whole gathered result, equal to the single-device one.
"""

import os
import socket
import subprocess
import sys

import numpy as np

from scale_workloads import assert_same

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out, process_id, num_processes, port, devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               JAX_NUM_CPU_DEVICES=str(devices))
    return subprocess.Popen(
        [sys.executable, WORKER, "--process-id", str(process_id),
         "--num-processes", str(num_processes), "--port", str(port),
         "--out", out], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    workers = [_start(str(tmp_path / "multi"), i, 2, port, 2)
               for i in range(2)]
    single = _start(str(tmp_path / "single"), 0, 1, 0, 1)
    logs = []
    try:
        for p in workers + [single]:
            logs.append(p.communicate(timeout=900)[0])
    finally:
        for p in workers + [single]:
            if p.poll() is None:
                p.kill()
    for p, log in zip(workers + [single], logs):
        assert p.returncode == 0 and log.strip().endswith("ok"), log[-4000:]

    reference = np.load(tmp_path / "single" / "process0.npz")
    assert len(reference["loss"]) == 4
    for i in range(2):
        got = np.load(tmp_path / "multi" / f"process{i}.npz")
        assert int(got["meta.process_count"]) == 2
        assert int(got["meta.data_processes"]) == 2   # 'data' spans both.
        assert int(got["meta.tree_rows_per_device"]) == 2   # of 4 problems
        # FSDP: the [40, 192] embedding is split along its larger axis
        # over the 2 'data' rows of the mesh.
        assert tuple(got["meta.embedding_shard_shape"]) == (40, 96)
        assert not bool(got["meta.embedding_fully_addressable"])
        assert set(reference.files) <= set(got.files)
        assert_same(reference, got, f"process {i}")
