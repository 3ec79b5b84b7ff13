"""Reading a tokenizer from files: GGUF metadata or a Hugging Face tokenizer.json.

:func:`open_gguf` opens a GGUF file and :func:`read_gguf_tokenizer` turns the
``tokenizer.*`` metadata of an open GGUF file into a byte-level BPE
``tokenizers.Tokenizer`` (llama.cpp's reading of the fields);
:func:`read_tokenizer_json` loads ``tokenizer.json`` with the
``tokenizer_config.json``, ``chat_template.jinja`` and ``config.json`` beside
it. Both return a :class:`TokenizerParts`, the arguments of
:class:`qstar_jax.models.tokenizer.Tokenizer`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from qstar_jax.models.pretokenizers import PRE_KINDS, build_pre_tokenizer
from qstar_jax.models.tokenizer_errors import TokenizerError

__all__ = [
    "TokenizerParts",
    "open_gguf",
    "read_gguf_tokenizer",
    "read_tokenizer_json",
]

# GGUF token types (gguf.TokenType): CONTROL tokens are special, USER_DEFINED
# tokens are matched verbatim in text but are not special.
_TOKEN_TYPE_UNKNOWN = 2
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


@dataclasses.dataclass(frozen=True)
class TokenizerParts:
    """What a tokenizer file yields: the backend and the model's token settings.

    The fields are the arguments of ``Tokenizer.__init__`` (see there).
    """

    backend: tokenizers.Tokenizer
    name: str
    vocab_size: int | None
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    chat_template: str | None
    special_ids: list[int] | None = None


def open_gguf(path: str | Path) -> Any:
    """Opens a GGUF file for reading its metadata.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The open ``gguf.GGUFReader``.

    Raises:
        TokenizerError: the file is missing, unreadable or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/IndexError/... on bad files
        raise TokenizerError(
            f"cannot read GGUF file {path} (truncated or not a GGUF file): "
            f"{type(exc).__name__}: {exc}") from exc


def read_gguf_tokenizer(reader: Any, name: str) -> TokenizerParts:
    """Reads the tokenizer from an already-open ``gguf.GGUFReader``.

    Args:
        reader: the open reader.
        name: the file or model name, for messages.

    Returns:
        The tokenizer's parts.

    Raises:
        TokenizerError: a required ``tokenizer.*`` field is missing or
            malformed, or the tokenizer model / pre-tokenizer is unsupported.
    """
    fields = _GGUFFields(reader, name)
    model = fields.get("tokenizer.ggml.model", str, required=True)
    if model != "gpt2":
        raise TokenizerError(
            f"{name}: unsupported tokenizer model tokenizer.ggml.model={model!r}; "
            "only 'gpt2' (byte-level BPE) is supported")
    pre = fields.get("tokenizer.ggml.pre", str)
    if pre is None:
        # stacklevel 3: the warning names the caller of Tokenizer.from_gguf_reader.
        warnings.warn(f"{name}: GGUF has no tokenizer.ggml.pre; using llama.cpp's "
                      "'default' pre-tokenizer", stacklevel=3)
        pre = "default"
    pre_tokenizer = build_pre_tokenizer(pre, name)

    tokens = fields.get_list("tokenizer.ggml.tokens", str, required=True)
    merges_raw = fields.get_list("tokenizer.ggml.merges", str, required=True)
    token_types = fields.get_list("tokenizer.ggml.token_type", int)
    if token_types is not None and len(token_types) != len(tokens):
        raise TokenizerError(
            f"{name}: tokenizer.ggml.token_type has {len(token_types)} entries "
            f"but tokenizer.ggml.tokens has {len(tokens)}")
    n_vocab = len(tokens)
    if n_vocab == 0:
        raise TokenizerError(f"{name}: tokenizer.ggml.tokens is empty")

    def token_id(key: str) -> int | None:
        value = fields.get(key, int)
        if value is not None and not 0 <= value < n_vocab:
            raise TokenizerError(f"{name}: {key}={value} is outside [0, {n_vocab})")
        return value

    bos_id = token_id("tokenizer.ggml.bos_token_id")
    eos_id = token_id("tokenizer.ggml.eos_token_id")
    pad_id = token_id("tokenizer.ggml.padding_token_id")
    unk_id = token_id("tokenizer.ggml.unknown_token_id")
    add_bos = fields.get("tokenizer.ggml.add_bos_token", bool)
    if add_bos is None:  # llama.cpp's default: only the llama3 family adds BOS
        add_bos = PRE_KINDS[pre] == "llama3"
    chat_template = fields.get("tokenizer.chat_template", str)

    if token_types is None:
        special = sorted({i for i in (bos_id, eos_id, pad_id, unk_id) if i is not None})
        user_defined: list[int] = []
    else:
        special = [i for i, t in enumerate(token_types)
                   if t in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_UNKNOWN)]
        user_defined = [i for i, t in enumerate(token_types)
                        if t == _TOKEN_TYPE_USER_DEFINED]
    backend = _byte_level_bpe(tokens, _split_merges(merges_raw, name), pre_tokenizer,
                              ignore_merges=PRE_KINDS[pre] == "llama3", name=name)
    _register_added_tokens(backend, tokens, special, user_defined, name)
    return TokenizerParts(backend, name=name, vocab_size=n_vocab, bos_id=bos_id,
                          eos_id=eos_id, pad_id=pad_id, unk_id=unk_id, add_bos=bool(add_bos),
                          chat_template=chat_template, special_ids=special)


def read_tokenizer_json(path_or_dir: str | Path) -> TokenizerParts:
    """Loads a Hugging Face ``tokenizer.json`` and the configs beside it.

    ``tokenizer_config.json`` (optional) supplies the chat template, the
    bos/eos/pad/unk tokens and ``add_bos_token``; ``chat_template.jinja``
    (optional) the template when the config has none; ``config.json``
    (optional) the model's ``vocab_size`` and fallback token ids. Without
    ``add_bos_token`` the BOS setting is read off the tokenizer's
    post-processor, as transformers would apply it.

    Args:
        path_or_dir: the ``tokenizer.json`` file or the directory holding it.

    Returns:
        The tokenizer's parts.

    Raises:
        TokenizerError: a file is missing or not valid JSON, the tokenizer
            does not load, or a named special token is not in the vocabulary.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"tokenizer.json not found: {path}")
    text = _read_text(path)
    _parse_json(text, path)
    try:
        backend = tokenizers.Tokenizer.from_str(text)
    except Exception as exc:
        raise TokenizerError(f"cannot load tokenizer from {path}: {exc}") from exc
    name = str(path)

    folder = path.parent
    tok_cfg = _read_optional_json(folder / "tokenizer_config.json")
    model_cfg = _read_optional_json(folder / "config.json")

    def special_id(key: str) -> int | None:
        content = _token_content(tok_cfg.get(key), key, folder / "tokenizer_config.json")
        if content is not None:
            idx = backend.token_to_id(content)
            if idx is None:
                raise TokenizerError(f"{name}: {key}={content!r} from tokenizer_config.json "
                                     "is not in the vocabulary")
            return idx
        fallback = model_cfg.get(f"{key}_id")
        if isinstance(fallback, list):  # e.g. several stop ids; the first is primary
            fallback = fallback[0] if fallback else None
        if fallback is not None and not isinstance(fallback, int):
            raise TokenizerError(f"{folder / 'config.json'}: {key}_id={fallback!r} "
                                 "is not an integer")
        return fallback

    bos_id = special_id("bos_token")
    eos_id = special_id("eos_token")
    pad_id = special_id("pad_token")
    unk_id = special_id("unk_token")

    add_bos = tok_cfg.get("add_bos_token")
    if add_bos is None:
        with_special = backend.encode("a", add_special_tokens=True).ids
        without = backend.encode("a", add_special_tokens=False).ids
        add_bos = (bos_id is not None and len(with_special) > len(without)
                   and with_special[0] == bos_id)
    elif not isinstance(add_bos, bool):
        raise TokenizerError(f"{folder / 'tokenizer_config.json'}: add_bos_token="
                             f"{add_bos!r} is not a boolean")

    chat_template = _select_chat_template(tok_cfg.get("chat_template"),
                                          folder / "tokenizer_config.json")
    jinja_file = folder / "chat_template.jinja"
    if chat_template is None and jinja_file.is_file():
        chat_template = _read_text(jinja_file)

    vocab_size = model_cfg.get("vocab_size")
    if vocab_size is not None and not isinstance(vocab_size, int):
        raise TokenizerError(f"{folder / 'config.json'}: vocab_size={vocab_size!r} "
                             "is not an integer")
    return TokenizerParts(backend, name=name, vocab_size=vocab_size, bos_id=bos_id,
                          eos_id=eos_id, pad_id=pad_id, unk_id=unk_id, add_bos=add_bos,
                          chat_template=chat_template)


class _GGUFFields:
    """Typed access to a GGUF reader's metadata with errors naming the file."""

    def __init__(self, reader: Any, name: str) -> None:
        self._fields = reader.fields
        self._name = name

    def _contents(self, key: str, required: bool) -> Any:
        field = self._fields.get(key)
        if field is None:
            if required:
                raise TokenizerError(f"{self._name}: GGUF metadata has no {key!r}")
            return None
        try:
            return field.contents()
        except Exception as exc:
            raise TokenizerError(f"{self._name}: cannot read GGUF field {key!r}: {exc}") from exc

    def get(self, key: str, kind: type, required: bool = False) -> Any:
        """Returns a scalar field checked to be of ``kind`` (None when absent)."""
        value = self._contents(key, required)
        if value is None:
            return None
        if kind is bool:
            ok = isinstance(value, (bool, np.bool_))
        elif kind is int:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise TokenizerError(f"{self._name}: GGUF field {key!r} should be "
                                 f"{kind.__name__}, got {value!r:.80}")
        return kind(value)

    def get_list(self, key: str, kind: type, required: bool = False) -> list[Any] | None:
        """Returns an array field whose elements are all ``kind`` (None when absent)."""
        value = self._contents(key, required)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise TokenizerError(f"{self._name}: GGUF field {key!r} should be an array "
                                 f"of {kind.__name__}")
        return value


def _split_merges(merges: list[str], name: str) -> list[tuple[str, str]]:
    """Splits GGUF merges ``"a b"`` at the first space after position 0, as llama.cpp does."""
    pairs = []
    for i, merge in enumerate(merges):
        cut = merge.find(" ", 1)
        if cut < 0:
            raise TokenizerError(f"{name}: tokenizer.ggml.merges[{i}]={merge!r} "
                                 "is not two tokens separated by a space")
        pairs.append((merge[:cut], merge[cut + 1:]))
    return pairs


def _byte_level_bpe(tokens: list[str], merges: list[tuple[str, str]],
                    pre_tokenizer: pre_tokenizers.PreTokenizer, *, ignore_merges: bool,
                    name: str) -> tokenizers.Tokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` over ``tokens`` (id = list position)."""
    vocab = {tok: i for i, tok in enumerate(tokens)}
    try:
        bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges)
    except Exception as exc:  # the Rust side raises plain Exception subclasses
        raise TokenizerError(f"{name}: cannot build the BPE model: {exc}") from exc
    backend = tokenizers.Tokenizer(bpe)
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    return backend


def _register_added_tokens(backend: tokenizers.Tokenizer, tokens: list[str],
                           special: list[int], user_defined: list[int], name: str) -> None:
    """Registers special and user-defined tokens so text containing them splits there."""
    backend.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i in special])
    backend.add_tokens(
        [AddedToken(tokens[i], special=False, normalized=False) for i in user_defined])
    for i in [*special, *user_defined]:
        if backend.token_to_id(tokens[i]) != i:
            raise TokenizerError(f"{name}: token {tokens[i]!r} (id {i}) appears more than "
                                 "once in tokenizer.ggml.tokens")


def _read_text(path: Path) -> str:
    """Reads a UTF-8 text file, turning I/O and decoding errors into TokenizerError."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"cannot read {path}: {exc}") from exc


def _parse_json(text: str, path: Path) -> Any:
    """Parses JSON text, naming the file and position on failure."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{path} is not valid JSON: {exc}") from exc


def _read_optional_json(path: Path) -> dict[str, Any]:
    """Reads a JSON object file if it exists; an empty dict otherwise."""
    if not path.is_file():
        return {}
    data = _parse_json(_read_text(path), path)
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} should hold a JSON object, got {type(data).__name__}")
    return data


def _token_content(value: Any, key: str, path: Path) -> str | None:
    """The text of a special token given as a string or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{path}: {key}={value!r:.80} is neither a string nor a token dict")


def _select_chat_template(value: Any, path: Path) -> str | None:
    """The chat template from ``tokenizer_config.json`` (the 'default' of a named list)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        template = named.get("default")
        if isinstance(template, str):
            return template
        if template is None:
            return None
    raise TokenizerError(f"{path}: chat_template has an unexpected form ({type(value).__name__})")
