"""Tokenizer built from GGUF metadata / tokenizer.json, checked on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from tokenizers import pre_tokenizers, processors

from qstar_jax.models.checkpoint import smollm2_gguf_path
from qstar_jax.models.tokenizer import (
    SUPPORTED_PRE_TYPES,
    Tokenizer,
    TokenizerError,
    build_pre_tokenizer,
)

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_FILE = FIXTURES / "smollm2_hf_reference.json"
# Written by transformers (save_pretrained of the tokenizer it converts from the
# SmolLM2 GGUF) with the ids the `tokenizers` library computes from it
# (experiments/make_hf_reference.py).
HF_TOKENIZER_DIR = FIXTURES / "smollm2_hf_tokenizer"

ROUND_TRIP_STRINGS = [
    "Hello world! 123",
    "$1,234.56",
    "line one\nline two\n\nline four\n",
    "  double  spaces  ",
    "tabs\tand\ttrailing   ",
    "café naïve – “quotes” ‘single’",
    "Emoji: 🙂🚀👩‍👩‍👧",
    "中文 日本語 한국어 العربية",
    "x = 3.14159, y = -2e10; 007",
    "#### 18",
    "\n\n\n",
    "",
    " ",
    "I'M can't won't THEY'LL",
    "<|im_start|>user\nHi<|im_end|>\n",
    "½ ¹²³ ٣ ⅷ",
    "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\n",
]

SYSTEM_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi"},
]


@pytest.fixture(scope="module")
def gguf_path() -> str:
    """Path of the SmolLM2 GGUF file."""
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def smol(gguf_path: str) -> Tokenizer:
    """The SmolLM2 tokenizer, built once from the GGUF metadata."""
    return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="module")
def hf_ids() -> list[dict]:
    """Text -> ids of the transformers-written tokenizer.json (tests/fixtures)."""
    return json.loads((HF_TOKENIZER_DIR / "reference_ids.json").read_text(
        encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def smol_json_dir(smol: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library's own SmolLM2 backend saved as tokenizer.json with
    hand-written HF-style configs (the eos token in its dict form)."""
    folder = tmp_path_factory.mktemp("smollm2_hf")
    smol.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": True},
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": smol.chat_template,
    }))
    (folder / "config.json").write_text(json.dumps({"vocab_size": 49152, "eos_token_id": 2}))
    return folder


# --------------------------------------------------------------------------- #
# SmolLM2 from GGUF.
# --------------------------------------------------------------------------- #

def test_known_ids(smol: Tokenizer) -> None:
    assert smol.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]


@pytest.mark.parametrize("text", ROUND_TRIP_STRINGS)
def test_round_trip(smol: Tokenizer, text: str) -> None:
    ids = smol.encode(text)
    assert all(0 <= i < smol.vocab_size for i in ids)
    assert smol.decode(ids) == text


def test_metadata(smol: Tokenizer) -> None:
    assert smol.vocab_size == 49152
    assert (smol.bos_id, smol.eos_id, smol.pad_id, smol.unk_id) == (1, 2, 2, 0)
    assert smol.add_bos is False
    assert smol.special_ids == set(range(17))


def test_special_tokens_are_single_ids(smol: Tokenizer) -> None:
    assert smol.encode("<|im_start|>") == [1]
    assert smol.encode("<|im_end|>") == [2]
    assert smol.encode("<|im_start|>assistant\nOk<|im_end|>")[0] == 1
    assert smol.encode("<|im_start|>assistant\nOk<|im_end|>")[-1] == 2
    assert smol.decode([1, 2]) == "<|im_start|><|im_end|>"
    assert smol.decode(smol.encode("<|im_start|>Hi<|im_end|>"), skip_special=True) == "Hi"


def test_add_bos_override(smol: Tokenizer) -> None:
    assert smol.encode("Hi", add_bos=True) == [1] + smol.encode("Hi")
    assert smol.encode_batch(["Hi", "Hello world! 123"]) == [
        smol.encode("Hi"), smol.encode("Hello world! 123")]
    assert smol.encode_batch(["Hi"], add_bos=True) == [[1] + smol.encode("Hi")]


def test_decode_accepts_arrays_and_rejects_bad_ids(smol: Tokenizer) -> None:
    assert smol.decode(np.array([19556, 905], np.int32)) == "Hello world"
    assert smol.decode([]) == ""
    with pytest.raises(TokenizerError, match="49152"):
        smol.decode([49152])
    with pytest.raises(TokenizerError, match="-1"):
        smol.decode([-1, 5])
    with pytest.raises(TokenizerError, match="1-D"):
        smol.decode(np.zeros((2, 2), np.int32))
    with pytest.raises(TypeError):
        smol.encode(b"bytes")  # type: ignore[arg-type]


def test_token_texts_and_masks(smol: Tokenizer) -> None:
    texts = smol.token_texts()
    assert len(texts) == smol.vocab_size
    assert texts[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert texts[19556] == "Hello" and texts[905] == " world" and texts[216] == " "
    texts[0] = "mutated"  # the cache hands out copies
    assert smol.token_texts()[0] == "<|endoftext|>"

    newline = smol.newline_mask()
    assert newline.shape == (49152,) and newline.dtype == np.bool_
    (nl,) = smol.encode("\n")
    (nlnl,) = smol.encode("\n\n")
    (hello,) = smol.encode("Hello")
    assert (nl, nlnl) == (198, 1116)
    assert newline[nl] and newline[nlnl] and not newline[hello]
    assert int(newline.sum()) == sum("\n" in t for t in smol.token_texts())

    digits = smol.token_mask(str.isdigit)
    assert digits.shape == (49152,)
    assert np.flatnonzero(digits)[:10].tolist() == list(range(32, 42))


# --------------------------------------------------------------------------- #
# Chat template.
# --------------------------------------------------------------------------- #

def test_chat_template_with_system(smol: Tokenizer) -> None:
    assert smol.apply_chat_template(SYSTEM_MESSAGES) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert smol.apply_chat_template(SYSTEM_MESSAGES, add_generation_prompt=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n")


def test_chat_template_without_system_inserts_default(smol: Tokenizer) -> None:
    # SmolLM2's template: if the first message is not a system message it
    # writes a fixed system turn naming the model before the conversation.
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert smol.chat_template is not None and default in smol.chat_template
    assert smol.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        f"<|im_start|>system\n{default}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_encode_chat_adds_no_bos(smol: Tokenizer) -> None:
    ids = smol.encode_chat(SYSTEM_MESSAGES)
    assert ids == smol.encode(smol.apply_chat_template(SYSTEM_MESSAGES), add_bos=False)
    assert ids[:3] == [1, 9690, 198] and ids[-3:] == [520, 9531, 198]


def test_chat_template_rendering_environment(smol: Tokenizer) -> None:
    template = ("{{ bos_token }}{% for m in messages %}{{ m | tojson }}{% endfor %}"
                "{% if extra %}{{ raise_exception('bad: ' + extra) }}{% endif %}")
    tok = Tokenizer(smol.backend, name="custom-model", bos_id=1, eos_id=2,
                    chat_template=template)
    assert tok.apply_chat_template([{"role": "user", "content": "é"}]) == (
        '<|im_start|>{"role": "user", "content": "é"}')
    with pytest.raises(TokenizerError, match="custom-model.*bad: boom"):
        tok.apply_chat_template([], extra="boom")
    broken = Tokenizer(smol.backend, name="broken-model", chat_template="{% for %}")
    with pytest.raises(TokenizerError, match="broken-model.*does not parse"):
        broken.apply_chat_template([])
    bare = Tokenizer(smol.backend, name="bare-model")
    with pytest.raises(TokenizerError, match="bare-model.*no chat template"):
        bare.apply_chat_template(SYSTEM_MESSAGES)


# --------------------------------------------------------------------------- #
# Agreement with the transformers reference fixture.
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def reference() -> dict:
    """HF transformers reference ids for SmolLM2 (tests/fixtures)."""
    return json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))


def test_reference_tokenizer_cases(smol: Tokenizer, reference: dict) -> None:
    cases = reference["tokenizer_cases"]
    assert cases
    for case in cases:
        assert smol.encode(case["text"]) == case["ids"], case["text"]
        assert smol.decode(case["ids"]) == case["text"]


def _split_digits(text: str) -> list[str]:
    """What SmolLM2's pre-tokenizer does before the GPT-2 byte-level split:
    every numeric character (Rust's char::is_numeric, categories Nd/Nl/No)
    becomes a piece of its own (tokenizers' Digits(individual_digits=True))."""
    pieces, run = [], ""
    for ch in text:
        if unicodedata.category(ch) in ("Nd", "Nl", "No"):
            pieces += [run, ch] if run else [ch]
            run = ""
        else:
            run += ch
    return pieces + [run] if run else pieces


def test_ids_match_the_transformers_written_tokenizer(
        smol: Tokenizer, hf_ids: list[dict]) -> None:
    """Ids against an independent tokenizer: the one transformers converts
    from the same GGUF. It has no Digits step (transformers maps the GGUF's
    'smollm' label to plain GPT-2 byte-level), so the GGUF tokenizer must
    equal it piece by piece after splitting off every numeric character,
    and equal it on whole texts wherever that split changes nothing."""
    backend = tokenizers.Tokenizer.from_file(str(HF_TOKENIZER_DIR / "tokenizer.json"))
    differ = []
    for case in hf_ids:
        text, ids = case["text"], case["ids"]
        assert backend.encode(text, add_special_tokens=False).ids == ids, text
        piecewise = [i for piece in _split_digits(text)
                     for i in backend.encode(piece, add_special_tokens=False).ids]
        assert smol.encode(text) == piecewise, text
        if smol.encode(text) != ids:
            differ.append(text)
    # Where the Digits step matters: whitespace runs and non-ASCII numerals.
    assert len(differ) >= 5, differ
    assert {"  123", "\n\n42", "Answer:\n 18"} <= set(differ)
    assert len(hf_ids) - len(differ) >= 25


def test_reference_prompts(smol: Tokenizer, reference: dict) -> None:
    for prompt in reference["prompts"]:
        assert smol.encode(prompt["text"]) == prompt["input_ids"], prompt["name"]


def test_reference_chat_prompt_matches_template(smol: Tokenizer, reference: dict) -> None:
    (prompt,) = [p for p in reference["prompts"] if p["name"] == "gsm8k_chatml"]
    text = prompt["text"]
    system = text.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]
    user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    assert smol.apply_chat_template(messages) == text
    assert smol.encode_chat(messages) == prompt["input_ids"]


# --------------------------------------------------------------------------- #
# tokenizer.json.
# --------------------------------------------------------------------------- #

def test_transformers_written_tokenizer_json(smol: Tokenizer, hf_ids: list[dict]) -> None:
    """The folder transformers wrote (tokenizer.json, tokenizer_config.json
    with plain-string special tokens and no add_bos_token, the template in
    chat_template.jinja) loads with the right ids, BOS rule and template."""
    loaded = Tokenizer.from_tokenizer_json(HF_TOKENIZER_DIR)
    assert loaded.vocab_size == 49152
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.unk_id) == (1, 2, 2, 0)
    assert loaded.add_bos is False  # Its post-processor adds nothing.
    assert loaded.special_ids == smol.special_ids == set(range(17))
    for case in hf_ids:
        assert loaded.encode(case["text"]) == case["ids"], case["text"]
        assert loaded.decode(case["ids"]) == case["text"]
    assert loaded.chat_template == smol.chat_template
    assert loaded.apply_chat_template(SYSTEM_MESSAGES) == smol.apply_chat_template(
        SYSTEM_MESSAGES)
    assert loaded.encode_chat(SYSTEM_MESSAGES) == smol.encode_chat(SYSTEM_MESSAGES)
    by_file = Tokenizer.from_tokenizer_json(HF_TOKENIZER_DIR / "tokenizer.json")
    assert by_file.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]
    assert by_file.chat_template == loaded.chat_template  # The folder's configs.


def test_tokenizer_json_round_trip(smol: Tokenizer, smol_json_dir: Path) -> None:
    """The library's own backend, saved and loaded back with configs."""
    loaded = Tokenizer.from_tokenizer_json(smol_json_dir)
    for text in ROUND_TRIP_STRINGS:
        assert loaded.encode(text) == smol.encode(text), text
    assert loaded.vocab_size == 49152
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.unk_id) == (1, 2, 2, 0)
    assert loaded.add_bos is False
    assert loaded.special_ids == smol.special_ids
    assert loaded.apply_chat_template(SYSTEM_MESSAGES) == smol.apply_chat_template(
        SYSTEM_MESSAGES)


def test_tokenizer_json_alone(tmp_path: Path) -> None:
    shutil.copy(HF_TOKENIZER_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    bare = Tokenizer.from_tokenizer_json(tmp_path)
    assert bare.vocab_size == 49152
    assert bare.bos_id is None and bare.eos_id is None and bare.add_bos is False
    assert bare.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]
    with pytest.raises(TokenizerError, match="no chat template"):
        bare.apply_chat_template(SYSTEM_MESSAGES)
    with pytest.raises(TokenizerError, match="no BOS"):
        bare.encode("Hi", add_bos=True)


def test_tokenizer_json_bos_from_post_processor(smol: Tokenizer, tmp_path: Path) -> None:
    backend = Tokenizer.from_tokenizer_json(_saved(smol, tmp_path / "a")).backend
    backend.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    folder = tmp_path / "b"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|im_start|>"}))
    (folder / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
    tok = Tokenizer.from_tokenizer_json(folder)
    assert tok.add_bos is True
    assert tok.encode("Hi") == [1] + smol.encode("Hi")
    assert tok.encode("Hi", add_bos=False) == smol.encode("Hi")
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == "<|im_start|>Hi"
    assert tok.encode_chat([{"role": "user", "content": "Hi"}]) == [1] + smol.encode("Hi")


def test_tokenizer_json_padded_vocab(smol: Tokenizer, tmp_path: Path) -> None:
    folder = _saved(smol, tmp_path)
    (folder / "config.json").write_text(json.dumps({"vocab_size": 49216}))
    tok = Tokenizer.from_tokenizer_json(folder)
    assert tok.vocab_size == 49216
    assert tok.newline_mask().shape == (49216,)
    assert tok.token_texts()[-1] == ""
    (folder / "config.json").write_text(json.dumps({"vocab_size": 1000}))
    with pytest.raises(TokenizerError, match="vocab_size=1000"):
        Tokenizer.from_tokenizer_json(folder)


# --------------------------------------------------------------------------- #
# Bad input.
# --------------------------------------------------------------------------- #

def test_missing_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(TokenizerError, match="not found.*nope.gguf"):
        Tokenizer.from_gguf(missing)
    with pytest.raises(TokenizerError, match="tokenizer.json not found"):
        Tokenizer.from_tokenizer_json(tmp_path)
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.from_tokenizer_json(tmp_path / "missing.json")


def test_truncated_gguf(gguf_path: str, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.gguf"
    with open(gguf_path, "rb") as f:
        bad.write_bytes(f.read(1000))
    with pytest.raises(TokenizerError, match="truncated.gguf"):
        Tokenizer.from_gguf(bad)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("definitely not a GGUF file " * 10)
    with pytest.raises(TokenizerError, match="text.gguf"):
        Tokenizer.from_gguf(not_gguf)


def test_corrupt_tokenizer_json(smol: Tokenizer, tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerError, match="tokenizer.json is not valid JSON"):
        Tokenizer.from_tokenizer_json(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        Tokenizer.from_tokenizer_json(tmp_path)

    folder = _saved(smol, tmp_path / "cfg")
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.from_tokenizer_json(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(TokenizerError, match="<\\|nope\\|>.*not in the vocabulary"):
        Tokenizer.from_tokenizer_json(folder)


# --------------------------------------------------------------------------- #
# Small synthetic GGUF files: tokenizer model and pre-tokenizer types.
# --------------------------------------------------------------------------- #

_ALPHABET = sorted(pre_tokenizers.ByteLevel.alphabet())
_TINY_SPECIALS = ["<s>", "</s>"]
# "Ġ ," merges a space into the punctuation after it, as every supported
# pre-tokenizer but 'default' (which isolates punctuation) lets it.
_TINY_MERGES = ["Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ ,"]
_TINY_EXTRA = ["Ġw", "or", "Ġwor", "ld", "Ġworld", "123", "Ġ,", "<think>"]


def _tiny_gguf(path: Path, *, model: str = "gpt2", pre: str | None = "llama-bpe",
               add_bos: bool | None = None) -> Path:
    """Writes a GGUF holding only tokenizer metadata (bytes + a few merges)."""
    import gguf

    tokens = _TINY_SPECIALS + _ALPHABET + _TINY_EXTRA
    types = [3, 3] + [1] * (len(_ALPHABET) + len(_TINY_EXTRA) - 1) + [4]
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_TINY_MERGES)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tiny_id(token: str) -> int:
    return (_TINY_SPECIALS + _ALPHABET + _TINY_EXTRA).index(token)


def test_gguf_not_gpt2_model(tmp_path: Path) -> None:
    path = _tiny_gguf(tmp_path / "llama_spm.gguf", model="llama")
    with pytest.raises(TokenizerError, match="'llama'.*llama_spm.gguf|llama_spm.gguf.*'llama'"):
        Tokenizer.from_gguf(path)


def test_gguf_unknown_pre_type(tmp_path: Path) -> None:
    path = _tiny_gguf(tmp_path / "bogus_pre.gguf", pre="bogus-pre")
    with pytest.raises(TokenizerError, match="bogus_pre.gguf.*'bogus-pre'"):
        Tokenizer.from_gguf(path)


def test_gguf_llama_bpe(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(_tiny_gguf(tmp_path / "l3.gguf", pre="llama-bpe"))
    assert tok.add_bos is True  # llama.cpp's default for llama-bpe without the key
    assert tok.vocab_size == 2 + 256 + len(_TINY_EXTRA)
    assert tok.special_ids == {0, 1}
    ids = tok.encode("a world 123 <think>")
    assert ids[0] == 0
    assert _tiny_id("Ġworld") in ids
    assert _tiny_id("123") in ids  # in the vocabulary: ignore_merges takes it whole
    assert _tiny_id("<think>") in ids  # user-defined token matched verbatim
    assert tok.decode(ids, skip_special=True) == "a world 123 <think>"
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "x"


def test_gguf_add_bos_key_wins(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(_tiny_gguf(tmp_path / "l3.gguf", pre="llama-bpe", add_bos=False))
    assert tok.add_bos is False
    assert tok.encode("ab") == [_tiny_id("a"), _tiny_id("b")]


@pytest.mark.parametrize("pre", ["qwen2", "smollm", "gpt-2", "gpt2", "default"])
def test_gguf_other_pre_types(tmp_path: Path, pre: str) -> None:
    tok = Tokenizer.from_gguf(_tiny_gguf(tmp_path / "t.gguf", pre=pre))
    assert tok.add_bos is False
    text = "Hello world 12345\n\n  x, y!"
    ids = tok.encode(text)
    assert _tiny_id("Ġworld") in ids
    assert _tiny_id("123") not in ids  # no merges build it and only llama3 ignores merges
    assert tok.decode(ids) == text


def test_gguf_missing_pre_uses_default(tmp_path: Path) -> None:
    """Without the label the ids are those of an explicit 'default', on a
    text where 'default' differs from every other pre-tokenizer."""
    path = _tiny_gguf(tmp_path / "nopre.gguf", pre=None)
    with pytest.warns(UserWarning, match="tokenizer.ggml.pre"):
        tok = Tokenizer.from_gguf(path)
    text = "a , b world"

    def ids(pre: str) -> list[int]:
        return Tokenizer.from_gguf(_tiny_gguf(tmp_path / f"{pre}.gguf", pre=pre)).encode(
            text, add_bos=False)

    assert tok.encode(text, add_bos=False) == ids("default")
    assert _tiny_id("Ġ,") not in ids("default")
    for other in ("gpt2", "smollm", "llama-bpe", "qwen2"):
        assert _tiny_id("Ġ,") in ids(other), other
    assert tok.decode(tok.encode(text)) == text


# --------------------------------------------------------------------------- #
# Pre-tokenizer regexes (expected pieces worked out by hand from the patterns).
# --------------------------------------------------------------------------- #

_PRE_SAMPLE = "I'M 12345 ok\n\n  x"


@pytest.mark.parametrize("pre, pieces", [
    ("llama-bpe", ["I", "'M", "Ġ", "123", "45", "Ġok", "ĊĊ", "Ġ", "Ġx"]),
    ("qwen2", ["I", "'M", "Ġ", "1", "2", "3", "4", "5", "Ġok", "ĊĊ", "Ġ", "Ġx"]),
    ("gpt-2", ["I", "'", "M", "Ġ12345", "Ġok", "ĊĊĠ", "Ġx"]),
    ("smollm", ["I", "'", "M", "Ġ", "1", "2", "3", "4", "5", "Ġok", "ĊĊĠ", "Ġx"]),
    ("default", ["I", "'", "M", "Ġ", "123", "45", "Ġok", "ĊĊĠ", "Ġx"]),
])
def test_pre_tokenizer_pieces(pre: str, pieces: list[str]) -> None:
    got = [piece for piece, _ in build_pre_tokenizer(pre).pre_tokenize_str(_PRE_SAMPLE)]
    assert got == pieces


def test_default_pre_tokenizer_isolates_punctuation() -> None:
    got = [p for p, _ in build_pre_tokenizer("default").pre_tokenize_str("a , b!! $12345")]
    assert got == ["a", "Ġ", ",", "Ġb", "!!", "Ġ", "$", "123", "45"]


def test_supported_pre_types_and_error() -> None:
    assert {"smollm", "gpt2", "gpt-2", "default", "llama-bpe", "qwen2"} <= set(
        SUPPORTED_PRE_TYPES)
    with pytest.raises(TokenizerError, match="model.gguf.*'tekken'"):
        build_pre_tokenizer("tekken", "model.gguf")


def _saved(smol: Tokenizer, folder: Path) -> Path:
    """Copies the transformers-written SmolLM2 tokenizer.json (alone) into
    ``folder`` and returns ``folder``."""
    del smol
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HF_TOKENIZER_DIR / "tokenizer.json", folder / "tokenizer.json")
    return folder
