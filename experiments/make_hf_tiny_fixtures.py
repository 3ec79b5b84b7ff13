"""Tiny Hugging Face safetensors checkpoints + transformers reference outputs (test fixtures).

What it produces
----------------
Three small checkpoint directories, written by Hugging Face transformers itself
(``save_pretrained(..., safe_serialization=True)``), each with a ``reference.json`` of the
outputs transformers computes from the saved files:

``tests/fixtures/hf_tiny_llama/``
    ``LlamaForCausalLM`` (vocab 97, hidden 64, intermediate 128, 2 layers, 4 query heads,
    2 KV heads, head_dim 16, rope_theta 1e4, rms_norm_eps 1e-5, untied ``lm_head``, no
    attention bias), randomly initialised with ``initializer_range=0.2``; float32 weights.
``tests/fixtures/hf_tiny_qwen2/``
    ``Qwen2ForCausalLM`` (same sizes, rope_theta 1e6, rms_norm_eps 1e-6, tied embeddings,
    so ``lm_head.weight`` is not stored), ``initializer_range=0.2``; every q/k/v projection
    bias is then overwritten with ``torch.randn(...) * 0.2`` so that a loader that drops
    the biases cannot match the reference; float32 weights.
``tests/fixtures/hf_tiny_llama_bf16/``
    The llama model above cast to bfloat16 (``config.json`` says ``"dtype": "bfloat16"``).
    Its reference is computed in float32 from the bf16-rounded weights (the saved bf16
    checkpoint is loaded back and upcast to float32 before running).

Each directory holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and
``reference.json``. ``reference.json`` records the torch / transformers versions, the
checkpoint's sha256, and for 3 fixed input id sequences (lengths 7, 12, 20, ids drawn in
[0, 97) from ``numpy.random.default_rng(20240607)``; the same sequences for all three
directories): the full float32 logits at every position (shape ``[len, 97]``; every value
is written as the shortest decimal that reads back to the same float32) and a 10-token
greedy continuation from ``model.generate(do_sample=False, max_new_tokens=10,
min_new_tokens=10, eos_token_id=None, pad_token_id=0)``. Everything runs on CPU in
float32 with ``attn_implementation="eager"``, ``model.eval()`` and ``torch.no_grad()``;
the reference is always computed from the checkpoint *as reloaded from disk* with
``from_pretrained``. The greedy continuation is cross-checked against a plain argmax loop
over full (uncached) forward passes.

Note for loaders: transformers 5 writes ``rope_theta`` into ``config.json`` as
``rope_parameters.rope_theta`` (no top-level ``rope_theta``), and Qwen2's ``config.json`` has
no ``head_dim`` (it is ``hidden_size // num_attention_heads``); ``reference.json`` repeats
both under ``settings.model_config``.

The output is deterministic (``torch.manual_seed(0)`` before building each model, no
timestamps), so re-running the script rewrites identical files on the same versions.

The repository's tests only *read* these files; they never need torch or transformers.

How to run it
-------------
From the repository root, with the reference virtual environment (torch 2.13.0 CPU,
transformers 5.23, numpy, safetensors)::

    echo "torch==2.13.0" > /tmp/refenv-constraints.txt
    /work/refenv/bin/pip install -c /tmp/refenv-constraints.txt transformers safetensors numpy
    HF_HUB_OFFLINE=1 /work/refenv/bin/python experiments/make_hf_tiny_fixtures.py

Option: ``--out-root DIR`` (default ``tests/fixtures``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import platform
import re
import shutil

import numpy as np
import safetensors
import torch
import transformers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT_ROOT = REPO_ROOT / "tests" / "fixtures"

TORCH_SEED = 0
INPUT_SEED = 20240607
INPUT_LENGTHS = (7, 12, 20)
VOCAB = 97
MAX_NEW_TOKENS = 10
QKV_BIAS_SCALE = 0.2

GENERATE_KWARGS = dict(
    do_sample=False,
    max_new_tokens=MAX_NEW_TOKENS,
    min_new_tokens=MAX_NEW_TOKENS,
    eos_token_id=None,
    pad_token_id=0,
)

KEEP_FILES = {"config.json", "generation_config.json", "model.safetensors"}


# ----------------------------------------------------------------------------- configs


def llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attention_bias=False,
        initializer_range=0.2,
    )


def qwen2_config() -> Qwen2Config:
    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )


def build_llama() -> LlamaForCausalLM:
    torch.manual_seed(TORCH_SEED)
    model = LlamaForCausalLM(llama_config())
    return model.to(torch.float32)


def build_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(TORCH_SEED)
    model = Qwen2ForCausalLM(qwen2_config())
    with torch.no_grad():
        # Random non-zero q/k/v biases (transformers initialises them to zero).
        for layer in model.model.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                assert proj.bias is not None, "Qwen2 q/k/v projections should have biases"
                proj.bias.copy_(torch.randn(proj.bias.shape) * QKV_BIAS_SCALE)
    return model.to(torch.float32)


# ----------------------------------------------------------------------------- helpers


def sha256_of(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def f32_text(x: np.float32) -> str:
    """Shortest decimal text that reads back to the same float32 (numpy's Dragon4 `str`)."""
    x = np.float32(x)
    if not np.isfinite(x):
        raise ValueError(f"non-finite logit {x!r}")
    s = str(x)
    assert _JSON_NUMBER.match(s), s
    assert np.float32(float(s)) == x and np.float32(json.loads(s)) == x, (s, x)
    return s


class _Raw:
    """A pre-formatted JSON fragment (the float32 logits)."""

    def __init__(self, text: str):
        self.text = text


def logits_json(logits: np.ndarray) -> _Raw:
    assert logits.dtype == np.float32 and logits.ndim == 2
    rows = ["[" + ", ".join(f32_text(v) for v in row) + "]" for row in logits]
    return _Raw("[\n" + ",\n".join("        " + r for r in rows) + "\n      ]")


def dump_json(obj, indent: int = 0) -> str:
    """json.dumps with 2-space indentation that inlines short lists and passes _Raw through."""
    pad = "  " * indent
    if isinstance(obj, _Raw):
        return obj.text
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        flat = all(
            isinstance(v, (int, float, str, bool))
            or v is None
            or (isinstance(v, (list, tuple)) and all(isinstance(u, (int, float)) for u in v))
            for v in obj.values()
        )
        if flat and len(json.dumps(obj)) <= 80:
            return json.dumps(obj)
        items = [
            f"{pad}  {json.dumps(str(k))}: {dump_json(v, indent + 1)}" for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, (int, float, str, bool)) or v is None for v in obj):
            return json.dumps(list(obj))
        items = [f"{pad}  {dump_json(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def input_sequences() -> list[list[int]]:
    rng = np.random.default_rng(INPUT_SEED)
    return [[int(t) for t in rng.integers(0, VOCAB, size=n)] for n in INPUT_LENGTHS]


def clean_dir(path: pathlib.Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def check_saved_files(path: pathlib.Path) -> None:
    names = {p.name for p in path.iterdir()}
    extra = names - KEEP_FILES
    for name in extra:  # nothing else expected; keep the fixture minimal
        (path / name).unlink()
    missing = KEEP_FILES - names
    assert not missing, f"{path}: missing {missing}"


def safetensors_summary(path: pathlib.Path) -> dict[str, dict]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in sorted(f.keys()):
            t = f.get_slice(key)
            out[key] = {"shape": list(t.get_shape()), "dtype": t.get_dtype()}
    return out


# ----------------------------------------------------------------------------- reference


@torch.no_grad()
def reference_for(ckpt_dir: pathlib.Path, model_cls, description: str, extra: dict) -> dict:
    """Reload the saved checkpoint (upcast to float32) and record logits + greedy tokens."""
    model = model_cls.from_pretrained(
        str(ckpt_dir), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, (name, p.dtype)
    assert model.config._attn_implementation == "eager"

    cases = []
    for ids in input_sequences():
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(input_ids=x).logits[0].to(torch.float32).numpy()
        assert logits.shape == (len(ids), VOCAB), logits.shape
        assert np.all(np.isfinite(logits))

        out = model.generate(
            x, attention_mask=torch.ones_like(x), **GENERATE_KWARGS
        )
        new = [int(t) for t in out[0, len(ids):]]
        assert len(new) == MAX_NEW_TOKENS, new

        # Cross-check: plain greedy argmax with full forward passes (no cache, no processors).
        seq = list(ids)
        manual = []
        for _ in range(MAX_NEW_TOKENS):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            manual.append(nxt)
            seq.append(nxt)
        assert manual == new, (manual, new)
        assert int(np.argmax(logits[-1])) == new[0]

        cases.append(
            {
                "input_ids": ids,
                "logits_shape": list(logits.shape),
                "logits": logits_json(logits),
                "greedy_new_tokens": new,
            }
        )

    st = ckpt_dir / "model.safetensors"
    return {
        "description": description,
        "model_class": model_cls.__name__,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "checkpoint": {
            "files": sorted(p.name for p in ckpt_dir.iterdir() if p.name != "reference.json"),
            "model_safetensors_sha256": sha256_of(st),
            "tensors": safetensors_summary(st),
        },
        "settings": {
            "torch_seed": TORCH_SEED,
            "input_seed": INPUT_SEED,
            "input_generator": f"numpy.random.default_rng({INPUT_SEED}).integers(0, {VOCAB}, size=n) "
            f"for n in {list(INPUT_LENGTHS)}",
            "model_config": {
                k: getattr(model.config, k)
                for k in (
                    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                    "max_position_embeddings", "tie_word_embeddings", "hidden_act",
                )
            }
            | {
                # Qwen2Config has no head_dim attribute: hidden_size // num_attention_heads.
                "head_dim": getattr(model.config, "head_dim", None)
                or model.config.hidden_size // model.config.num_attention_heads,
                # transformers 5 stores it in config.json as rope_parameters.rope_theta.
                "rope_theta": model.config.rope_parameters["rope_theta"],
            },
            "compute_dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager",
            "generate_kwargs": GENERATE_KWARGS,
            **extra,
        },
        "notes": (
            "logits: model(input_ids).logits[0] for the un-batched sequence, float32, all positions, "
            "shape [len, vocab]; each value is the shortest decimal that reads back to the same "
            "float32. greedy_new_tokens: the 10 tokens generate() appends (never stops early), "
            "identical to a plain argmax loop over full forward passes."
        ),
        "cases": cases,
    }


def sanity(ref: dict, name: str) -> None:
    for case in ref["cases"]:
        text = case["logits"].text
        lg = np.array(json.loads(text), dtype=np.float32)
        assert lg.shape == tuple(case["logits_shape"])
        assert float(lg.std()) > 0.1, f"{name}: logits nearly constant (std {lg.std()})"
        assert all(float(r.std()) > 1e-3 for r in lg), f"{name}: a logits row is ~uniform"
        assert len(set(case["greedy_new_tokens"])) > 1, f"{name}: constant continuation"
        assert len({int(np.argmax(r)) for r in lg}) > 1, f"{name}: argmax identical at all positions"
    print(
        f"{name}: ok; logits std per case "
        + ", ".join(
            f"{np.array(json.loads(c['logits'].text), dtype=np.float32).std():.3f}"
            for c in ref["cases"]
        )
        + "; greedy "
        + " | ".join(" ".join(map(str, c["greedy_new_tokens"])) for c in ref["cases"])
    )


def write_reference(ckpt_dir: pathlib.Path, ref: dict) -> None:
    sanity(ref, ckpt_dir.name)
    text = dump_json(ref) + "\n"
    json.loads(text)  # valid JSON
    (ckpt_dir / "reference.json").write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out-root", type=pathlib.Path, default=DEFAULT_OUT_ROOT)
    args = ap.parse_args()
    root: pathlib.Path = args.out_root
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    # --- llama, float32
    llama_dir = root / "hf_tiny_llama"
    clean_dir(llama_dir)
    llama = build_llama().eval()
    llama.save_pretrained(str(llama_dir), safe_serialization=True)
    check_saved_files(llama_dir)
    write_reference(
        llama_dir,
        reference_for(
            llama_dir,
            LlamaForCausalLM,
            "Tiny random LlamaForCausalLM (float32 checkpoint), initializer_range=0.2, untied lm_head.",
            {"checkpoint_dtype": "float32"},
        ),
    )

    # --- llama, bfloat16 copy of the same weights
    bf16_dir = root / "hf_tiny_llama_bf16"
    clean_dir(bf16_dir)
    llama_bf16 = llama.to(torch.bfloat16)
    llama_bf16.config.dtype = torch.bfloat16
    llama_bf16.save_pretrained(str(bf16_dir), safe_serialization=True)
    check_saved_files(bf16_dir)
    cfg = json.loads((bf16_dir / "config.json").read_text())
    assert cfg.get("dtype") == "bfloat16", cfg.get("dtype")
    write_reference(
        bf16_dir,
        reference_for(
            bf16_dir,
            LlamaForCausalLM,
            "The hf_tiny_llama model cast to bfloat16 and saved; reference computed in float32 from "
            "the bf16-rounded weights (checkpoint reloaded and upcast to float32).",
            {"checkpoint_dtype": "bfloat16", "weights_upcast_to": "float32"},
        ),
    )

    # --- qwen2, float32, tied embeddings, random q/k/v biases
    qwen_dir = root / "hf_tiny_qwen2"
    clean_dir(qwen_dir)
    qwen = build_qwen2().eval()
    qwen.save_pretrained(str(qwen_dir), safe_serialization=True)
    check_saved_files(qwen_dir)
    write_reference(
        qwen_dir,
        reference_for(
            qwen_dir,
            Qwen2ForCausalLM,
            "Tiny random Qwen2ForCausalLM (float32 checkpoint), initializer_range=0.2, tied "
            f"embeddings, q/k/v biases = randn * {QKV_BIAS_SCALE}.",
            {"checkpoint_dtype": "float32", "qkv_bias_init": f"torch.randn(shape) * {QKV_BIAS_SCALE}"},
        ),
    )

    for d in (llama_dir, qwen_dir, bf16_dir):
        print(f"\n{d.relative_to(root.parent.parent) if d.is_relative_to(root.parent.parent) else d}")
        for p in sorted(d.iterdir()):
            print(f"  {p.name:24s} {p.stat().st_size:9d} bytes")
        for k, v in safetensors_summary(d / "model.safetensors").items():
            print(f"    {k:45s} {str(v['shape']):12s} {v['dtype']}")


if __name__ == "__main__":
    main()
