"""Spreading batched work over devices with `jax.sharding`.

Search and sampling are batched over independent problems, so the natural
layout is data parallel: the batch axis of every per-problem array is split
over a 'data' mesh axis and the model parameters are replicated. `jax.jit`
then partitions the whole computation (prefill, the decode while-loop, the
search loop) with no code change; the only cross-device traffic is the
loop's "all rows done?" reduction.

Example:
  >>> mesh = data_mesh()                      # all devices on 'data'
  >>> model = replicate(model, mesh)
  >>> tokens, lengths, keys = shard_rows((tokens, lengths, keys), mesh)
  >>> steps = jax.jit(propose_steps, static_argnames="config")(
  ...     model, tokens, lengths, keys, replicate(stop, mesh), config=config)

Simulate devices on a CPU with `JAX_NUM_CPU_DEVICES=8` (or
`jax.config.update('jax_num_cpu_devices', 8)` before any JAX op). For several
hosts, call `jax.distributed.initialize()` first; `data_mesh` then spans the
devices of every process.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A one-axis ('data') mesh over the first `num_devices` devices."""
    n = num_devices or jax.device_count()
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"asked for {n} devices, {jax.device_count()} exist")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:n])


def shard_rows(tree, mesh: jax.sharding.Mesh):
    """Places every leaf with its leading (batch) axis split over 'data'.

    Raises:
      ValueError: a leaf whose leading axis does not divide evenly.
    """
    size = mesh.shape[DATA_AXIS]

    def put(x):
        if x.ndim == 0 or x.shape[0] % size:
            raise ValueError(
                f"cannot split an array of shape {x.shape} over {size} "
                "devices along its first axis; pad the batch to a multiple")
        spec = PartitionSpec(DATA_AXIS, *([None] * (x.ndim - 1)))
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(put, tree)


def replicate(tree, mesh: jax.sharding.Mesh):
    """Places every leaf (parameters, masks) whole on every device."""
    return jax.tree.map(
        lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec())),
        tree)
