"""Starting a multi-process (multi-host) run: `jax.distributed.initialize`.

One process runs per host (per TPU VM of a pod slice, per GPU node; or
several per machine, one per GPU, with `local_device_ids`). After
`initialize`, `jax.devices()` lists the devices of every process, a
`parallel.make_mesh` spans them all, and the same program runs in every
process: each one passes the same arguments to the jitted search or to
`train` and holds only its own shards of the global arrays
(`parallel.shard_rows` and `parallel.to_host` handle both directions).

Where the settings come from, in order:

1. a `DistributedConfig` passed to `initialize`;
2. else `DistributedConfig.from_env()`: JAX_COORDINATOR_ADDRESS
   ('host:port' of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID and
   JAX_LOCAL_DEVICE_IDS ('0,1');
3. whatever is still unset is detected by JAX itself on Cloud TPU, Slurm,
   Open MPI and Kubernetes (then `initialize()` needs no settings at all).

On CPU backends, cross-process collectives use gloo (TCP) unless
`cpu_collectives` says otherwise; it must be chosen before the backend
starts, so call `initialize` before any other JAX operation.

Example (two processes on one machine, as the tests run it):
  >>> initialize(DistributedConfig(
  ...     coordinator_address="127.0.0.1:12345", num_processes=2,
  ...     process_id=int(sys.argv[1]),
  ...     coordinator_bind_address="127.0.0.1:12345"))
  >>> mesh = make_mesh(MeshConfig(data=2, model=2))   # 4 global devices
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax

CPU_COLLECTIVES = ("gloo", "mpi")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """Settings of `jax.distributed.initialize` (None: detect).

    Attributes:
      coordinator_address: 'host:port' of process 0's coordination service,
        reachable from every process.
      num_processes: processes in the run.
      process_id: this process, in [0, num_processes).
      local_device_ids: the accelerators this process drives (None: all it
        sees).
      coordinator_bind_address: where process 0's service listens (None:
        every interface on the coordinator's port; '127.0.0.1:port' keeps a
        single-machine run on loopback).
      cpu_collectives: 'gloo' or 'mpi', the CPU backend's cross-process
        collectives.
      initialization_timeout_s: seconds to wait for every process to join.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    coordinator_bind_address: str | None = None
    cpu_collectives: str = "gloo"
    initialization_timeout_s: int = 300

    def __post_init__(self):
        if self.cpu_collectives not in CPU_COLLECTIVES:
            raise ValueError(
                f"DistributedConfig.cpu_collectives="
                f"{self.cpu_collectives!r}; use one of {CPU_COLLECTIVES}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError("DistributedConfig.num_processes must be >= 1, "
                             f"got {self.num_processes}")
        if (self.process_id is not None and self.num_processes is not None
                and not 0 <= self.process_id < self.num_processes):
            raise ValueError(
                f"DistributedConfig.process_id must be in [0, "
                f"{self.num_processes}), got {self.process_id}")
        if self.initialization_timeout_s < 1:
            raise ValueError("DistributedConfig.initialization_timeout_s "
                             "must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None
                 ) -> DistributedConfig:
        """Settings from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
        JAX_PROCESS_ID and JAX_LOCAL_DEVICE_IDS (unset ones stay None).

        Raises:
          ValueError: a variable that is not an integer (list).
        """
        env = os.environ if environ is None else environ

        def integer(name):
            text = env.get(name)
            if text is None or not text.strip():
                return None
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"DistributedConfig.from_env: {name}="
                                 f"{text!r} is not an integer") from None

        ids = env.get("JAX_LOCAL_DEVICE_IDS")
        try:
            local = (tuple(int(i) for i in ids.split(",")) if ids else None)
        except ValueError:
            raise ValueError(
                f"DistributedConfig.from_env: JAX_LOCAL_DEVICE_IDS={ids!r} "
                "is not a comma-separated list of integers") from None
        return cls(coordinator_address=env.get("JAX_COORDINATOR_ADDRESS")
                   or None,
                   num_processes=integer("JAX_NUM_PROCESSES"),
                   process_id=integer("JAX_PROCESS_ID"),
                   local_device_ids=local)


def initialize(config: DistributedConfig | None = None) -> None:
    """Joins this process to a multi-process run (once; later calls in an
    initialized process do nothing).

    Args:
      config: the settings; None reads `DistributedConfig.from_env()` and
        leaves the rest to JAX's cluster detection.

    Raises:
      RuntimeError: (from JAX) the process already ran a JAX operation, or
        the other processes did not join within the timeout.
    """
    if jax.distributed.is_initialized():
        return
    config = DistributedConfig.from_env() if config is None else config
    jax.config.update("jax_cpu_collectives_implementation",
                      config.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        local_device_ids=(list(config.local_device_ids)
                          if config.local_device_ids is not None else None),
        coordinator_bind_address=config.coordinator_bind_address,
        initialization_timeout=config.initialization_timeout_s)


def shutdown() -> None:
    """Leaves the run (every process should call it before exiting)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def is_coordinator() -> bool:
    """True in process 0, the one that writes shared outputs."""
    return jax.process_index() == 0
