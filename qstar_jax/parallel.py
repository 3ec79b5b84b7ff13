"""Meshes and array placement for data- and model-parallel runs.

The library uses one device mesh with up to two axes:

* 'data': problems (search) or examples (training) are split over it; every
  per-row array has its leading batch axis sharded on 'data'.
* 'model': the weights of the policy and critics may be split over it
  (tensor parallelism, `partitioning.shard_params(..., 'tensor')`); with
  size 1 (the default) the mesh is purely data parallel.

`jax.jit` then partitions prefill, the decode loop and the training step
with no change to that code (the compiler inserts the collectives). Two
wrappers cover functions that build per-row state of their own, such as
searches (under plain `jax.jit` their trees would be replicated and every
device would repeat the whole batch):

* `map_rows`: an explicit per-device program (`jax.shard_map` over
  'data'): each device loops over its own rows with no communication at
  all (replicated models);
* `jit_rows`: `jax.jit` with the outputs constrained to rows over 'data'
  (any layout, tensor-parallel included; one loop for all devices).

Every placement function accepts host arrays (numpy), single-device JAX
arrays and PRNG key arrays, and works the same in one process and in a
multi-process run (`distributed.initialize`), where every process passes the
same full host value and keeps only its own shards. `to_host` brings a
result back to numpy on every process.

Example:
  >>> mesh = make_mesh(MeshConfig(data=4, model=2))
  >>> models = shard_params(models, mesh, "tensor")   # partitioning.py
  >>> prompts, lengths, keys = shard_rows((prompts, lengths, keys), mesh)
  >>> search = jit_rows(qstar_search, mesh, static_argnames=("config",))
  >>> result = search(models, prompts, lengths, keys, replicate(stop, mesh),
  ...                 config=config)
  >>> best = to_host(result.best)                      # numpy [B]

Simulate devices on a CPU with `JAX_NUM_CPU_DEVICES=8` (or
`jax.config.update('jax_num_cpu_devices', 8)` before any JAX op).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """The shape of a ('data', 'model') mesh.

    Attributes:
      data: devices along 'data'; 0 uses every device not taken by 'model'
        (all devices / model).
      model: devices along 'model' (1: no tensor parallelism).
    """

    data: int = 0
    model: int = 1

    def __post_init__(self):
        if self.data < 0 or self.model < 1:
            raise ValueError(
                f"MeshConfig: data must be >= 0 (0: all devices) and "
                f"model >= 1, got data={self.data}, model={self.model}")


def make_mesh(config: MeshConfig = MeshConfig(),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'model') mesh over `devices` (default: all of them).

    Devices are laid out in order with 'model' varying fastest, so a model
    group stays within one host when a host's devices are consecutive (as
    `jax.devices()` lists them in a multi-process run).

    Raises:
      ValueError: the mesh needs more devices than there are, or `data=0`
        and the device count is not a multiple of `model`.
    """
    devices = list(jax.devices() if devices is None else devices)
    model = config.model
    if config.data == 0:
        if len(devices) % model:
            raise ValueError(
                f"make_mesh: {len(devices)} devices do not split into "
                f"groups of model={model}")
        data = len(devices) // model
    else:
        data = config.data
    if data * model > len(devices):
        raise ValueError(
            f"make_mesh: data={data} x model={model} needs {data * model} "
            f"devices, {len(devices)} exist")
    return jax.make_mesh((data, model), (DATA_AXIS, MODEL_AXIS),
                         axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices[:data * model])


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis ('data') mesh over the first `num_devices` devices."""
    n = num_devices or jax.device_count()
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"data_mesh: asked for {n} devices, "
                         f"{jax.device_count()} exist")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:n])


def axis_size(mesh: Mesh, axis: str) -> int:
    """Devices along `axis` (1 when the mesh has no such axis)."""
    return mesh.shape.get(axis, 1)


def place(x, sharding: NamedSharding) -> jax.Array:
    """One array (host, device or PRNG keys) placed with `sharding`.

    In one process, device arrays move device to device (`jax.device_put`).
    In a multi-process run, host values (and local device arrays, through
    the host) are cut into shards on the host
    (`jax.make_array_from_callback`), so each process uploads only its own
    shards of the value it was given; arrays that already span several
    processes are resharded on device.
    """
    if isinstance(x, jax.Array) and (jax.process_count() == 1
                                     or not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key):
        data = place(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index])


def place_tree(tree, mesh: Mesh, specs):
    """Places every leaf of `tree` with its `PartitionSpec` in `specs` (a
    matching pytree of specs, or one spec for every leaf)."""
    if isinstance(specs, PartitionSpec):
        return jax.tree.map(
            lambda x: place(x, NamedSharding(mesh, specs)), tree)
    return jax.tree.map(
        lambda x, spec: place(x, NamedSharding(mesh, spec)), tree, specs)


def row_spec(ndim: int) -> PartitionSpec:
    """The spec of a per-row array: leading axis on 'data', rest whole."""
    return PartitionSpec(DATA_AXIS, *([None] * (ndim - 1)))


def shard_rows(tree, mesh: Mesh):
    """Places every leaf with its leading (batch) axis split over 'data'.

    Raises:
      ValueError: a scalar leaf, or a leading axis that does not divide
        evenly over the 'data' devices.
    """
    size = axis_size(mesh, DATA_AXIS)

    def put(x):
        shape = np.shape(x)
        if not shape or shape[0] % size:
            raise ValueError(
                f"shard_rows: cannot split an array of shape {shape} over "
                f"{size} 'data' devices along its first axis; pad the batch "
                "to a multiple")
        return place(x, NamedSharding(mesh, row_spec(len(shape))))

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Places every leaf (parameters, masks) whole on every device."""
    return place_tree(tree, mesh, PartitionSpec())


def to_host(tree):
    """Every leaf as a numpy array holding the whole value, on every process.

    Arrays with shards on other processes are gathered
    (`multihost_utils.process_allgather`, a collective: every process must
    call it); PRNG key arrays come back as their raw key data.
    """
    def get(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
                x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x,
                                                                tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def jit_rows(fn: Callable, mesh: Mesh, *,
             static_argnames: Sequence[str] = ()) -> Callable:
    """`jax.jit(fn)` with every output kept split by rows over 'data'.

    For batched functions that build their own per-row state inside (a
    search creates its tree in the jitted function): plain `jax.jit`
    shards what it is given, but XLA's propagation does not reach arrays
    made from constants, so without this constraint a search's tree is
    replicated and every device repeats the whole batch. Constraining the
    outputs to [B / data] blocks propagates back through the loop. Works
    with any parameter layout, tensor-parallel included; the loop stays
    one program for all devices (it runs until the batch's last row is
    done).

    Args:
      fn: a batched function; every output leaf is per-row ([B, ...]).
      mesh: the mesh.
      static_argnames: keyword arguments that are compile-time constants.

    Raises:
      ValueError: (when traced) an output leaf is a scalar.
    """
    def rows(path, x):
        if x.ndim == 0:
            raise ValueError(
                f"jit_rows: output {jax.tree_util.keystr(path)} is a scalar;"
                " every output must be per-row ([B, ...])")
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(mesh, row_spec(x.ndim)))

    def constrained(*args, **kwargs):
        return jax.tree_util.tree_map_with_path(rows, fn(*args, **kwargs))

    return jax.jit(constrained, static_argnames=tuple(static_argnames))


def map_rows(fn: Callable, mesh: Mesh, *, row_argnums: Sequence[int],
             static_argnames: Sequence[str] = ()) -> Callable:
    """`fn` as one explicit per-device program over the 'data' axis.

    `jax.shard_map` gives every 'data' device the rows of the arguments in
    `row_argnums` that it holds ([B / data, ...] blocks of [B, ...] arrays)
    and the whole of every other positional argument; each output leaf must
    be per-row ([B, ...]) and is reassembled along its leading axis. For
    functions whose rows never interact, such as searches: each device
    runs its own loop over its own rows, with no communication at all, and
    stops when they are done instead of waiting for the batch's slowest
    row. Results equal those of `fn` on the whole batch.

    The models must be whole on every device (the 'replicated' layout on a
    mesh whose 'model' axis is 1): tensor-parallel weights would put
    'model' collectives inside loops that run a different number of times
    on different devices, which the CPU runtime cannot pair up (it
    deadlocks). Use `jit_rows` for tensor-parallel search.

    Args:
      fn: a batched function; its keyword arguments in `static_argnames`
        are compile-time constants (configs).
      mesh: the mesh.
      row_argnums: positions of the per-row arguments.
      static_argnames: keyword arguments passed through as constants.

    Returns:
      A jitted function with `fn`'s signature.

    Raises:
      ValueError: the mesh has a 'model' axis larger than 1.
    """
    if axis_size(mesh, MODEL_AXIS) > 1:
        raise ValueError(
            f"map_rows: the mesh has {axis_size(mesh, MODEL_AXIS)} 'model' "
            "devices; per-device loops need whole (replicated) models. "
            "Use jit_rows with tensor-parallel models")
    row_argnums = tuple(row_argnums)

    def run(*args, **static):
        in_specs = tuple(
            jax.tree.map(lambda x: row_spec(np.ndim(x)), a)
            if i in row_argnums else PartitionSpec()
            for i, a in enumerate(args))

        def per_device(*local):
            return fn(*local, **static)

        out_shape = jax.eval_shape(per_device, *args)
        out_specs = jax.tree.map(lambda s: row_spec(len(s.shape)), out_shape)
        return jax.shard_map(per_device, mesh=mesh, in_specs=in_specs,
                             out_specs=out_specs, axis_names={DATA_AXIS},
                             check_vma=False)(*args)

    return jax.jit(run, static_argnames=tuple(static_argnames))
