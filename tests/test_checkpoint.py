"""Checkpoint loading: safetensors against transformers, GGUF round trips.

The safetensors fixtures under tests/fixtures/hf_tiny_* were written by
Hugging Face transformers (experiments/make_hf_tiny_fixtures.py) together
with the logits and greedy continuations transformers computed; the GGUF
files are written here with the `gguf` package the way llama.cpp's converter
writes them (q/k rows permuted, `[out, in]` matrices, quantized blocks along
the input axis).
"""

import dataclasses
import gc
import hashlib
import json
import os
import shutil

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from qstar_jax.models.checkpoint import CheckpointError, unpermute_rows
from qstar_jax.models.config import tiny
from qstar_jax.models.decoder import init_decoder
from qstar_jax.models.gguf_loader import load_gguf, open_gguf
from qstar_jax.models.safetensors_loader import (config_from_hf,
                                                 load_safetensors)
from qstar_jax.sampling.decode import StopRule, forward_logits
from qstar_jax.sampling.proposer import rollout
from qstar_jax.sampling.states import pad_states
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

_T = gguf.GGMLQuantizationType
LOSSY_TYPES = (_T.F16, _T.BF16, _T.Q8_0, _T.Q4_0, _T.Q4_1)
HF_DIRS = {  # fixture directory -> max |logit difference| allowed
    "hf_tiny_llama": 1e-4,
    "hf_tiny_qwen2": 1e-4,
    # Reference computed in float32 from the bf16-rounded weights.
    "hf_tiny_llama_bf16": 1e-3,
}
GREEDY_TOKENS = 10

_logits = jax.jit(forward_logits)




def _reference(name):
    with open(os.path.join(FIXTURES, name, "reference.json")) as f:
        return json.load(f)["cases"]


# ---------------------------------------------------------------------------
# 1. Safetensors against transformers.


@pytest.fixture(scope="module", params=sorted(HF_DIRS))
def hf_checkpoint(request):
    """(directory name, model, config, reference cases) of one fixture."""
    name = request.param
    model, config = load_safetensors(os.path.join(FIXTURES, name))
    return name, model, config, _reference(name)


def test_hf_config_read_from_transformers5_json():
    """rope_theta comes from rope_parameters; Qwen2 has no head_dim."""
    _, llama = load_safetensors(os.path.join(FIXTURES, "hf_tiny_llama"))
    _, qwen = load_safetensors(os.path.join(FIXTURES, "hf_tiny_qwen2"))
    assert llama.rope_theta == 10_000.0 and qwen.rope_theta == 1_000_000.0
    assert (llama.head_dim, qwen.head_dim) == (16, 16)
    assert not llama.tie_embeddings and qwen.tie_embeddings
    assert qwen.qkv_bias and not llama.qkv_bias
    assert (llama.rms_norm_eps, qwen.rms_norm_eps) == (1e-5, 1e-6)


def test_hf_config_rope_variants():
    """Legacy top-level rope_theta; 'default' rope types are unscaled."""
    with open(os.path.join(FIXTURES, "hf_tiny_llama", "config.json")) as f:
        hf = json.load(f)
    legacy = {k: v for k, v in hf.items() if k != "rope_parameters"}
    assert config_from_hf(legacy | {"rope_theta": 500.0}).rope_theta == 500.0
    assert config_from_hf(legacy).rope_theta == 10_000.0
    default_scaling = legacy | {"rope_scaling": {"rope_type": "default"}}
    assert config_from_hf(default_scaling).rope_theta == 10_000.0
    llama3 = hf | {"rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                       "rope_theta": 5e5}}
    with pytest.raises(CheckpointError, match="llama3.*not supported"):
        config_from_hf(llama3)
    linear = legacy | {"rope_scaling": {"type": "linear", "factor": 2.0}}
    with pytest.raises(CheckpointError, match="rope_scaling.*not supported"):
        config_from_hf(linear)


def test_hf_logits_match_transformers(hf_checkpoint):
    """Every position of every case, right-padded into one batch."""
    name, model, _, cases = hf_checkpoint
    rows = [c["input_ids"] for c in cases]
    tokens, lengths = pad_states(rows, max(map(len, rows)))
    logits = np.asarray(_logits(model, tokens, lengths))
    for i, case in enumerate(cases):
        want = np.asarray(case["logits"], np.float32)
        assert want.shape == (len(case["input_ids"]), 97)
        diff = np.max(np.abs(logits[i, :len(case["input_ids"])] - want))
        assert diff < HF_DIRS[name], (name, i, diff)


def test_hf_greedy_matches_transformers(hf_checkpoint):
    """Repeated argmax over the growing sequence equals generate()."""
    _, model, _, cases = hf_checkpoint
    rows = [list(c["input_ids"]) for c in cases]
    width = max(map(len, rows)) + GREEDY_TOKENS
    for _ in range(GREEDY_TOKENS):
        tokens, lengths = pad_states(rows, width)
        logits = np.asarray(_logits(model, tokens, lengths))
        for i, row in enumerate(rows):
            row.append(int(np.argmax(logits[i, len(row) - 1])))
    for row, case in zip(rows, cases):
        assert row[len(case["input_ids"]):] == case["greedy_new_tokens"]


def test_hf_kv_cache_rollout_matches_transformers(hf_checkpoint):
    """The KV-cache decoding loop (greedy rollout) gives the same tokens."""
    _, model, config, cases = hf_checkpoint
    rows = [c["input_ids"] for c in cases]
    tokens, lengths = pad_states(rows, max(map(len, rows)))
    never = jnp.zeros((config.vocab_size,), bool)
    stop = StopRule(delimiter=never, end=never, final=never)
    keys = jax.random.split(jax.random.key(0), len(rows))
    conts = rollout(model, tokens, lengths, keys, stop,
                    max_tokens=GREEDY_TOKENS)
    got = np.asarray(conts.tokens)[:, 0]
    assert np.asarray(conts.lengths).tolist() == [[GREEDY_TOKENS]] * len(rows)
    for row, case in zip(got, cases):
        assert row.tolist() == case["greedy_new_tokens"]


# ---------------------------------------------------------------------------
# 2. GGUF round trips through every supported tensor type.

GGUF_CONFIG = tiny(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=16, intermediate_size=128,
                   max_seq_len=128)


def _gguf_layout(config):
    """(GGUF name, decoder pure-dict path, is a linear weight) triples."""
    out = [("token_embd.weight", ("embed", "embedding"), False),
           ("output_norm.weight", ("final_norm", "weight"), False)]
    if not config.tie_embeddings:
        out.append(("output.weight", ("lm_head", "kernel"), True))
    per_layer = [
        ("attn_norm.weight", ("attn_norm", "weight"), False),
        ("ffn_norm.weight", ("mlp_norm", "weight"), False),
        ("attn_q.weight", ("attn", "q_proj", "kernel"), True),
        ("attn_k.weight", ("attn", "k_proj", "kernel"), True),
        ("attn_v.weight", ("attn", "v_proj", "kernel"), True),
        ("attn_output.weight", ("attn", "o_proj", "kernel"), True),
        ("ffn_gate.weight", ("mlp", "gate_proj", "kernel"), True),
        ("ffn_up.weight", ("mlp", "up_proj", "kernel"), True),
        ("ffn_down.weight", ("mlp", "down_proj", "kernel"), True),
    ]
    for i in range(config.num_layers):
        for name, path, linear in per_layer:
            out.append((f"blk.{i}.{name}", ("layers", i) + path, linear))
    return out


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _with_params(model, params):
    """A copy of `model` holding the pure-dict `params`."""
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x, state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def _random_model(config, seed):
    """A decoder with weights large enough that every detail shows."""
    model = init_decoder(config, seed)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(np.asarray, _params(model))
    for name, path, _ in _gguf_layout(config):
        shape = _get(params, path).shape
        if name.endswith("norm.weight"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        else:
            value = 0.2 * rng.standard_normal(shape)
        _set(params, path, value.astype(np.float32))
    return _with_params(model, params)


def _hf_tensors(model, config):
    """GGUF name -> float32 array in PyTorch orientation ([out, in])."""
    params = _params(model)
    out = {}
    for name, path, linear in _gguf_layout(config):
        value = np.asarray(_get(params, path), np.float32)
        out[name] = value.T.copy() if linear else value
    return out


def _permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`."""
    rows = w.shape[0]
    return (w.reshape((n_head, 2, rows // n_head // 2) + w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _roundtrip(w, qtype):
    """The values a loader must recover from `w` stored as `qtype`."""
    if qtype == _T.F32:
        return w
    return np.asarray(gguf.quants.dequantize(gguf.quants.quantize(w, qtype),
                                             qtype), np.float32)


def _write_gguf(path, config, tensors, qtype=_T.F32, *, arch="llama",
                permute=True, types=None):
    """Writes HF-orientation `tensors` as llama.cpp would.

    Args:
      path: output file.
      config: metadata to write.
      tensors: GGUF name -> [out, in] float32 (HF row order for q/k).
      qtype: type of the 2-D weights; 1-D norms stay F32.
      arch: general.architecture and metadata prefix.
      permute: permute q/k rows for llama.cpp's interleaved rotary.
      types: GGUF name -> (type, raw uint8 bytes) overriding one tensor.
    """
    types = types or {}
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)
    for name, w in tensors.items():
        if name in types:
            raw_type, data = types[name]
            writer.add_tensor(name, data, raw_dtype=raw_type)
            continue
        if permute and name.endswith("attn_q.weight"):
            w = _permute(w, config.num_heads)
        elif permute and name.endswith("attn_k.weight"):
            w = _permute(w, config.num_kv_heads)
        t = qtype if w.ndim == 2 else _T.F32
        data = w if t == _T.F32 else gguf.quants.quantize(w, t)
        writer.add_tensor(name, data, raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _quantized_twin(model, config, qtype):
    """`model` with each 2-D weight rounded the way `qtype` rounds it."""
    params = jax.tree.map(np.asarray, _params(model))
    for name, path, linear in _gguf_layout(config):
        w = np.asarray(_get(params, path), np.float32)
        if w.ndim == 2:
            hf = w.T if linear else w
            hf = _roundtrip(np.ascontiguousarray(hf), qtype)
            _set(params, path, hf.T if linear else hf)
    return _with_params(model, params)


SAMPLE_ROWS = [[3, 17, 5, 60, 2, 9, 33, 41, 8, 1, 63, 20],
               [7, 7, 12, 50, 0, 44, 13]]


def _sample_logits(model):
    tokens, lengths = pad_states(SAMPLE_ROWS, 12)
    logits = np.asarray(_logits(model, tokens, lengths))
    return logits[0], logits[1, :7]


def _max_diff(model_a, model_b):
    a, b = _sample_logits(model_a), _sample_logits(model_b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def gguf_model():
    """A random tied decoder and its HF-orientation tensors."""
    model = _random_model(GGUF_CONFIG, seed=1)
    return model, _hf_tensors(model, GGUF_CONFIG)


@pytest.fixture(scope="module")
def f32_gguf(gguf_model, tmp_path_factory):
    """Path of `gguf_model` written as an F32 llama GGUF."""
    path = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    return _write_gguf(str(path), GGUF_CONFIG, gguf_model[1])


def _assert_config_matches(got, want):
    assert dataclasses.replace(got, rms_norm_eps=want.rms_norm_eps) == want
    assert got.rms_norm_eps == pytest.approx(want.rms_norm_eps, rel=1e-6)


@pytest.mark.parametrize("qtype", (_T.F32,) + LOSSY_TYPES,
                         ids=lambda t: t.name)
def test_gguf_round_trip(gguf_model, tmp_path, qtype):
    """Logits of the loaded model equal the (equally rounded) original."""
    model, tensors = gguf_model
    path = _write_gguf(str(tmp_path / "m.gguf"), GGUF_CONFIG, tensors, qtype)
    loaded, config = load_gguf(path)
    _assert_config_matches(config, GGUF_CONFIG)
    exact = _max_diff(loaded, model)
    if qtype == _T.F32:
        assert exact < 1e-5, exact
    else:
        rounded = _max_diff(loaded, _quantized_twin(model, GGUF_CONFIG, qtype))
        assert rounded < 1e-4, rounded
        # The rounding is real: the file does not hold the exact weights.
        assert exact > 1e-4, exact


def test_gguf_round_trip_untied(tmp_path):
    """An `output.weight` tensor gives an untied decoder."""
    cfg = dataclasses.replace(GGUF_CONFIG, tie_embeddings=False)
    model = _random_model(cfg, seed=2)
    tensors = _hf_tensors(model, cfg)
    assert "output.weight" in tensors
    path = _write_gguf(str(tmp_path / "untied.gguf"), cfg, tensors, _T.Q8_0)
    loaded, config = load_gguf(path)
    _assert_config_matches(config, cfg)
    assert loaded.lm_head is not None
    diff = _max_diff(loaded, _quantized_twin(model, cfg, _T.Q8_0))
    assert diff < 1e-4, diff


# ---------------------------------------------------------------------------
# 3. The q/k un-permutation.


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for heads, hd in ((4, 16), (2, 16), (9, 64)):
        w = rng.standard_normal((heads * hd, 24)).astype(np.float32)
        permuted = _permute(w, heads)
        assert not np.array_equal(permuted, w)
        np.testing.assert_array_equal(unpermute_rows(permuted, heads), w)
        bias = rng.standard_normal(heads * hd).astype(np.float32)
        np.testing.assert_array_equal(
            unpermute_rows(_permute(bias, heads), heads), bias)


def test_gguf_without_permutation_gives_different_logits(gguf_model,
                                                         tmp_path):
    """A file whose q/k rows were not permuted loads to a different model,
    so the round-trip test would catch a missing un-permutation."""
    model, tensors = gguf_model
    path = _write_gguf(str(tmp_path / "raw.gguf"), GGUF_CONFIG, tensors,
                       permute=False)
    loaded, _ = load_gguf(path)
    diff = _max_diff(loaded, model)
    assert diff > 1e-2, diff


# ---------------------------------------------------------------------------
# 4. Bad input: a CheckpointError that names the problem.


def test_gguf_file_not_found(tmp_path):
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        load_gguf(str(tmp_path / "missing.gguf"))


def test_gguf_truncated(f32_gguf, tmp_path):
    path = tmp_path / "truncated.gguf"
    with open(f32_gguf, "rb") as f:
        path.write_bytes(f.read(2000))
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        load_gguf(str(path))


def test_gguf_garbage(tmp_path):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        load_gguf(str(path))


def test_gguf_unsupported_tensor_type(tmp_path):
    """A Q6_K matrix (256-element blocks, 210 bytes each) is refused."""
    cfg = dataclasses.replace(GGUF_CONFIG, intermediate_size=256)
    tensors = _hf_tensors(_random_model(cfg, seed=3), cfg)
    name = "blk.1.ffn_down.weight"
    rows, cols = tensors[name].shape
    block, nbytes = gguf.GGML_QUANT_SIZES[_T.Q6_K]
    raw = np.zeros((rows, cols // block * nbytes), np.uint8)
    path = _write_gguf(str(tmp_path / "q6k.gguf"), cfg, tensors,
                       types={name: (_T.Q6_K, raw)})
    with pytest.raises(CheckpointError,
                       match=f"{name}.*unsupported type Q6_K"):
        load_gguf(path)


def test_gguf_unsupported_architecture(gguf_model, tmp_path):
    path = _write_gguf(str(tmp_path / "gpt2.gguf"), GGUF_CONFIG,
                       gguf_model[1], arch="gpt2")
    with pytest.raises(CheckpointError,
                       match="unsupported GGUF architecture 'gpt2'"):
        load_gguf(path)


def test_gguf_explicit_config_mismatch(f32_gguf):
    wrong = dataclasses.replace(GGUF_CONFIG, intermediate_size=256)
    with pytest.raises(CheckpointError,
                       match=r"does not match.*(gate|up|down)_proj"):
        load_gguf(f32_gguf, config=wrong)


def test_gguf_extra_tensor(gguf_model, tmp_path):
    tensors = dict(gguf_model[1])
    tensors["blk.0.attn_rot_embd"] = np.zeros((8,), np.float32)
    path = _write_gguf(str(tmp_path / "extra.gguf"), GGUF_CONFIG, tensors)
    with pytest.raises(CheckpointError,
                       match="no place for.*blk.0.attn_rot_embd"):
        load_gguf(path)


def _nan_gguf(gguf_model, path):
    tensors = dict(gguf_model[1])
    bad = tensors["blk.1.ffn_up.weight"].copy()
    bad[3, 5] = np.nan
    tensors["blk.1.ffn_up.weight"] = bad
    return _write_gguf(path, GGUF_CONFIG, tensors)


def test_gguf_nan_tensor(gguf_model, tmp_path):
    path = _nan_gguf(gguf_model, str(tmp_path / "nan.gguf"))
    with pytest.raises(CheckpointError, match="up_proj.*NaN"):
        load_gguf(path)


def _held_by_this_process(path):
    """Whether this process maps `path` into memory or has it open."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        if any(line.rstrip().endswith(" " + real) for line in f):
            return True
    fds = "/proc/self/fd"
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == real:
                return True
        except OSError:  # Closed since listing.
            pass
    return False


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_failed_load_leaves_nothing_behind(gguf_model, f32_gguf, tmp_path):
    """A failure late in loading (every tensor already decoded) writes no
    file, leaves the checkpoint as it was and neither mapped nor open in
    the process, and the next loads in the same process are unaffected."""
    model, _ = gguf_model
    path = _nan_gguf(gguf_model, str(tmp_path / "nan.gguf"))
    digest, listing = _sha256(path), sorted(os.listdir(tmp_path))
    reader = open_gguf(path)  # The check sees a live memory map...
    assert _held_by_this_process(path)
    del reader
    gc.collect()
    assert not _held_by_this_process(path)  # ...and its release.
    with pytest.raises(CheckpointError, match="up_proj.*NaN"):
        load_gguf(path)
    gc.collect()
    assert not _held_by_this_process(path)
    assert sorted(os.listdir(tmp_path)) == listing
    assert _sha256(path) == digest
    loaded, _ = load_gguf(f32_gguf)
    diff = _max_diff(loaded, model)
    assert diff < 1e-5, diff
    with pytest.raises(CheckpointError):
        load_safetensors(os.path.join(tmp_path, "no-such-dir"))
    assert sorted(os.listdir(tmp_path)) == listing
    hf_model, _ = load_safetensors(os.path.join(FIXTURES, "hf_tiny_qwen2"))
    case = _reference("hf_tiny_qwen2")[0]
    tokens, lengths = pad_states([case["input_ids"]], len(case["input_ids"]))
    logits = np.asarray(_logits(hf_model, tokens, lengths))[0]
    assert np.max(np.abs(logits - np.asarray(case["logits"]))) < 1e-4


@pytest.fixture()
def hf_copy(tmp_path):
    """A writable copy of the hf_tiny_llama fixture directory."""
    directory = tmp_path / "hf_tiny_llama"
    shutil.copytree(os.path.join(FIXTURES, "hf_tiny_llama"), directory)
    return directory


def _edit_config(directory, edit):
    with open(directory / "config.json") as f:
        hf = json.load(f)
    edit(hf)
    with open(directory / "config.json", "w") as f:
        json.dump(hf, f)


def test_safetensors_missing_directory(tmp_path):
    with pytest.raises(CheckpointError,
                       match="checkpoint directory not found"):
        load_safetensors(str(tmp_path / "absent"))


def test_safetensors_missing_config(hf_copy):
    os.remove(hf_copy / "config.json")
    with pytest.raises(CheckpointError, match="not found.*config.json"):
        load_safetensors(str(hf_copy))


def test_safetensors_corrupt_config(hf_copy):
    (hf_copy / "config.json").write_text('{"model_type": "llama", ')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_safetensors(str(hf_copy))


def test_safetensors_unsupported_model_type(hf_copy):
    _edit_config(hf_copy, lambda hf: hf.update(model_type="gpt2"))
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt2'"):
        load_safetensors(str(hf_copy))


def test_safetensors_config_missing_field(hf_copy):
    _edit_config(hf_copy, lambda hf: hf.pop("intermediate_size"))
    with pytest.raises(CheckpointError, match="lacks the field.*intermediate"):
        load_safetensors(str(hf_copy))


def test_safetensors_rope_scaling(hf_copy):
    _edit_config(hf_copy, lambda hf: hf.update(
        rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    with pytest.raises(CheckpointError, match="rope_scaling.*not supported"):
        load_safetensors(str(hf_copy))


def test_safetensors_corrupt_weights(hf_copy):
    (hf_copy / "model.safetensors").write_bytes(
        np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError,
                       match="not a readable safetensors file"):
        load_safetensors(str(hf_copy))


def test_safetensors_missing_tensor(hf_copy):
    tensors = load_file(str(hf_copy / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(hf_copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing.*1.*up_proj"):
        load_safetensors(str(hf_copy))


def test_safetensors_extra_tensor(hf_copy):
    tensors = load_file(str(hf_copy / "model.safetensors"))
    tensors["model.layers.2.mlp.up_proj.weight"] = np.zeros((4, 4),
                                                            np.float32)
    save_file(tensors, str(hf_copy / "model.safetensors"))
    with pytest.raises(CheckpointError,
                       match="no place for.*model.layers.2.mlp.up_proj"):
        load_safetensors(str(hf_copy))


# ---------------------------------------------------------------------------
# 5. The real SmolLM2-135M-Instruct GGUF.


def test_smollm2_config_and_parameter_count(smollm2):
    model, config = smollm2
    assert config.num_layers == 30
    assert config.hidden_size == 576
    assert (config.num_heads, config.num_kv_heads) == (9, 3)
    assert config.head_dim == 64
    assert config.vocab_size == 49152
    assert config.rope_theta == 100_000.0
    assert config.tie_embeddings and model.lm_head is None
    assert not config.qkv_bias
    loaded = sum(int(np.prod(x.shape))
                 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert config.num_parameters() == loaded == 134_515_008
