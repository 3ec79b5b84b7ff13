"""Parameter layouts: how the weights of a model lie on a mesh.

Three layouts, chosen by name:

* 'replicated': every device holds every weight (pure data parallelism).
* 'tensor': Megatron-style tensor parallelism over the 'model' mesh axis.
  In each block the query/key/value and SwiGLU gate/up projections are
  split along their output features (heads, hidden units) and the output
  and down projections along their input features, so each device computes
  its share of heads and hidden units and one all-reduce per sub-layer
  combines them; the token embedding (and an untied output layer) is split
  along the vocabulary. Norms and the critics' scalar heads are replicated.
  Replicated over 'data'.
* 'fsdp': fully sharded data parallelism over the 'data' axis. Every weight
  (and, in training, each optimizer moment, which has the weight's shape)
  is split along its largest axis that divides evenly over 'data'; the
  compiler gathers a weight where it is used and reduce-scatters its
  gradient. Weights with no such axis (scalars, odd sizes) are replicated.

A layout is only a placement: every layout computes the same function, and
results differ from a single device only by the order of float reductions.

Rules are matched on the names in a leaf's pytree path (the NNX attribute
names of `models.decoder`), so they apply unchanged to a `Decoder`, a
`Critic` (its `backbone`), a `QStarModels` tuple, an `nnx.State` of
parameters and an optax state that mirrors the parameters.

Example:
  >>> mesh = make_mesh(MeshConfig(data=2, model=4))
  >>> policy = shard_params(policy, mesh, "tensor")
  >>> specs = param_specs(nnx.state(policy, nnx.Param), mesh, "tensor")
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder
from qstar_jax.parallel import (DATA_AXIS, MODEL_AXIS, axis_size,
                                place_tree)

LAYOUTS = ("replicated", "tensor", "fsdp")

_M = MODEL_AXIS
TENSOR_RULES: dict[tuple[str, str], tuple] = {
    ("q_proj", "kernel"): (None, _M), ("q_proj", "bias"): (_M,),
    ("k_proj", "kernel"): (None, _M), ("k_proj", "bias"): (_M,),
    ("v_proj", "kernel"): (None, _M), ("v_proj", "bias"): (_M,),
    ("o_proj", "kernel"): (_M, None),
    ("gate_proj", "kernel"): (None, _M),
    ("up_proj", "kernel"): (None, _M),
    ("down_proj", "kernel"): (_M, None),
    ("embed", "embedding"): (_M, None),
    ("lm_head", "kernel"): (None, _M),
}
"""(module attribute, parameter name) -> per-axis mesh axes of the 'tensor'
layout; a parameter matching no rule is replicated."""


def path_names(path) -> tuple[str, ...]:
    """The attribute / key names along a pytree path (indices dropped, and
    the trailing `.value` of an NNX Variable)."""
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            names.append(entry.name)
        elif (isinstance(entry, jax.tree_util.DictKey)
              and not isinstance(entry.key, int)):
            names.append(str(entry.key))
    if names and names[-1] == "value":
        names.pop()
    return tuple(names)


def tensor_spec(names: tuple[str, ...], shape: tuple[int, ...],
                model_size: int) -> PartitionSpec:
    """The 'tensor' layout's spec of one parameter.

    Raises:
      ValueError: a split dimension does not divide by the 'model' size.
    """
    axes = TENSOR_RULES.get(names[-2:]) if len(names) >= 2 else None
    if axes is None or len(axes) != len(shape):
        return PartitionSpec()
    for dim, axis in zip(shape, axes):
        if axis is not None and dim % model_size:
            raise ValueError(
                f"tensor layout: parameter {'.'.join(names)} of shape "
                f"{shape} cannot split a dimension of {dim} over "
                f"{model_size} '{MODEL_AXIS}' devices; choose a 'model' "
                "size that divides the head and hidden widths")
    return PartitionSpec(*axes)


def check_tensor_split(config: DecoderConfig, model_size: int) -> None:
    """Raises ValueError unless the 'tensor' layout gives each of
    `model_size` devices whole query and key/value heads, an equal share
    of the SwiGLU units and of the vocabulary (for `config`'s decoder)."""
    for name in ("num_heads", "num_kv_heads", "intermediate_size",
                 "vocab_size"):
        value = getattr(config, name)
        if value % model_size:
            raise ValueError(
                f"tensor layout: DecoderConfig.{name}={value} does not "
                f"divide over {model_size} '{MODEL_AXIS}' devices; use a "
                f"'model' size that divides num_heads ({config.num_heads}),"
                f" num_kv_heads ({config.num_kv_heads}), intermediate_size "
                f"and vocab_size")


def fsdp_spec(shape: tuple[int, ...], data_size: int) -> PartitionSpec:
    """The 'fsdp' layout's spec: the largest axis divisible by the 'data'
    size (ties: the first) goes on 'data'; none divisible: replicated."""
    if data_size == 1:
        return PartitionSpec()
    best = None
    for i, dim in enumerate(shape):
        if dim % data_size == 0 and (best is None or dim > shape[best]):
            best = i
    if best is None:
        return PartitionSpec()
    axes = [None] * len(shape)
    axes[best] = DATA_AXIS
    return PartitionSpec(*axes)


def param_specs(tree, mesh: Mesh, layout: str):
    """A pytree of `PartitionSpec`s matching `tree` for `layout`.

    Args:
      tree: parameters: a module, a state, optimizer state, or any pytree
        of arrays (or `jax.ShapeDtypeStruct`s).
      mesh: the mesh (the 'tensor' layout needs a 'model' axis, 'fsdp' a
        'data' axis).
      layout: one of LAYOUTS.

    Raises:
      ValueError: an unknown layout, a mesh without the layout's axis, or
        a 'tensor' split that does not divide (for a `Decoder` in `tree`:
        heads, key/value heads, SwiGLU units or vocabulary).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"param_specs: layout {layout!r}; use one of "
                         f"{LAYOUTS}")
    needed = {"tensor": MODEL_AXIS, "fsdp": DATA_AXIS}.get(layout)
    if needed is not None and needed not in mesh.shape:
        raise ValueError(
            f"param_specs: layout {layout!r} needs a '{needed}' mesh axis; "
            f"the mesh has {tuple(mesh.shape)} (use make_mesh)")

    if layout == "tensor":
        for module in jax.tree.leaves(
                tree, is_leaf=lambda x: isinstance(x, Decoder)):
            if isinstance(module, Decoder):
                check_tensor_split(module.config,
                                   axis_size(mesh, MODEL_AXIS))

    def spec(path, leaf):
        shape = tuple(np.shape(leaf))
        if layout == "tensor":
            return tensor_spec(path_names(path), shape,
                               axis_size(mesh, MODEL_AXIS))
        if layout == "fsdp":
            return fsdp_spec(shape, axis_size(mesh, DATA_AXIS))
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec, tree)


def shard_params(tree, mesh: Mesh, layout: str):
    """`tree` (models, parameters, optimizer state) placed in `layout`.

    Returns a new pytree of the same structure (for NNX modules: new
    module objects holding the placed arrays).
    """
    return place_tree(tree, mesh, param_specs(tree, mesh, layout))


def bytes_per_device(tree, mesh: Mesh, layout: str) -> int:
    """Bytes of `tree` that one device holds in `layout` (the largest share;
    for reports and benchmarks)."""
    specs = param_specs(tree, mesh, layout)
    total = 0
    for leaf, spec in zip(jax.tree.leaves(tree), jax.tree.leaves(
            specs, is_leaf=lambda s: isinstance(s, PartitionSpec))):
        shards = math.prod(axis_size(mesh, a) for a in spec if a is not None)
        total += (np.size(leaf) // shards) * np.dtype(leaf.dtype).itemsize
    return int(total)
