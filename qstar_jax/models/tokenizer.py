"""Byte-level BPE tokenizer built from GGUF metadata or a Hugging Face tokenizer.json.

The :class:`Tokenizer` wraps a ``tokenizers.Tokenizer`` and adds what search over
reasoning steps needs: the model's special ids, per-id token texts and boolean
masks over the vocabulary (e.g. the newline tokens that end a step), and the
model's own jinja chat template rendered the way Hugging Face transformers does.

GGUF files only carry a pre-tokenizer *label* (``tokenizer.ggml.pre``); the
regular expressions behind each label live in llama.cpp
(``src/llama-vocab.cpp``, constructor of ``llm_tokenizer_bpe``) and are copied
below for the labels this module supports.
"""

from __future__ import annotations

import datetime
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import jinja2
import jinja2.ext
import numpy as np
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

__all__ = [
    "SUPPORTED_PRE_TYPES",
    "Tokenizer",
    "TokenizerError",
    "build_pre_tokenizer",
]


class TokenizerError(ValueError):
    """A tokenizer could not be built or used; the message names the cause."""


# --------------------------------------------------------------------------- #
# Pre-tokenizer regular expressions, copied from ggml-org/llama.cpp
# src/llama-vocab.cpp (llm_tokenizer_bpe constructor, `regex_exprs`).
# --------------------------------------------------------------------------- #

# LLAMA_VOCAB_PRE_TYPE_GPT2 (and the second expression of SMOLLM / DEFAULT).
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

# LLAMA_VOCAB_PRE_TYPE_LLAMA3. llama.cpp's rewrite of the tokenizer.json regex
# "(?i:'s|'t|'re|'ve|'m|'ll|'d)|..." with the case-insensitive group spelled out.
_LLAMA3_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# LLAMA_VOCAB_PRE_TYPE_QWEN2: as LLAMA3 but digits are split one by one.
_QWEN2_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# LLAMA_VOCAB_PRE_TYPE_DEFAULT (also used by llama.cpp when the label is missing):
# four expressions applied one after another.
_DEFAULT_PATTERNS = (
    r"[\p{P}\$\+<=>\^~\|]+",
    _GPT2_PATTERN,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)

# tokenizer.ggml.pre label -> canonical kind (label spellings as in llama.cpp's
# llama_vocab::impl::load, plus "gpt2" as an alias of llama.cpp's "gpt-2").
_PRE_KINDS: dict[str, str] = {
    "smollm": "smollm",
    "gpt-2": "gpt2",
    "gpt2": "gpt2",
    "default": "default",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "qwen2": "qwen2",
}

SUPPORTED_PRE_TYPES: tuple[str, ...] = tuple(sorted(_PRE_KINDS))

# GGUF token types (gguf.TokenType): CONTROL tokens are special, USER_DEFINED
# tokens are matched verbatim in text but are not special.
_TOKEN_TYPE_UNKNOWN = 2
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


def _isolated_split(pattern: str) -> pre_tokenizers.PreTokenizer:
    """Split that keeps every regex match (and every gap) as its own piece."""
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


def build_pre_tokenizer(pre_type: str, source: str = "<unknown>") -> pre_tokenizers.PreTokenizer:
    """Builds the pre-tokenizer that llama.cpp uses for a ``tokenizer.ggml.pre`` label.

    Args:
        pre_type: the GGUF label, one of :data:`SUPPORTED_PRE_TYPES`.
        source: file or model name used in error messages.

    Returns:
        A ``tokenizers`` pre-tokenizer that splits text and maps bytes to the
        GPT-2 byte-level alphabet.

    Raises:
        TokenizerError: the label is not supported.
    """
    kind = _PRE_KINDS.get(pre_type)
    if kind is None:
        raise TokenizerError(
            f"{source}: unsupported pre-tokenizer type tokenizer.ggml.pre={pre_type!r}; "
            f"supported: {', '.join(SUPPORTED_PRE_TYPES)}"
        )
    if kind == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    patterns = {
        "llama3": (_LLAMA3_PATTERN,),
        "qwen2": (_QWEN2_PATTERN,),
        "default": _DEFAULT_PATTERNS,
    }[kind]
    return pre_tokenizers.Sequence(
        [_isolated_split(p) for p in patterns]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


# --------------------------------------------------------------------------- #
# Chat templates, rendered as in transformers' `_compile_jinja_template`.
# --------------------------------------------------------------------------- #

def _raise_exception(message: str) -> None:
    """Template helper: aborts rendering with the template's own message."""
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Template filter ``tojson`` without HTML escaping (as transformers does)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    """Template helper: the current local time formatted with ``fmt``."""
    return datetime.datetime.now().strftime(fmt)


def _compile_chat_template(source: str, name: str) -> Any:
    """Compiles a chat template in an immutable jinja sandbox.

    Args:
        source: the jinja template text.
        name: model name for error messages.

    Returns:
        A compiled ``jinja2.Template``.

    Raises:
        TokenizerError: the template does not parse.
    """
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TokenizerError(f"{name}: chat template does not parse: {exc}") from exc


# --------------------------------------------------------------------------- #
# The tokenizer.
# --------------------------------------------------------------------------- #

class Tokenizer:
    """A byte-level BPE tokenizer with the model's special ids and chat template.

    Attributes:
        backend: the wrapped ``tokenizers.Tokenizer`` (save it with ``.save``).
        name: the file or model the tokenizer came from (used in messages).
        vocab_size: number of ids of the model (rows of its embedding), specials
            included; every mask has this length.
        bos_id: beginning-of-sequence id, or None.
        eos_id: end-of-sequence id (generation stops here), or None.
        pad_id: padding id, or None.
        unk_id: unknown-token id, or None.
        add_bos: whether :meth:`encode` prepends ``bos_id`` by default.
        chat_template: the model's jinja chat template, or None.
        special_ids: ids of the special (control) tokens.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        name: str,
        vocab_size: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        unk_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        special_ids: Iterable[int] | None = None,
    ) -> None:
        """Wraps an already-configured ``tokenizers.Tokenizer``.

        Args:
            backend: the tokenizer doing the work.
            name: the file or model name, for messages.
            vocab_size: model vocabulary size; defaults to the largest id + 1.
            bos_id: beginning-of-sequence id.
            eos_id: end-of-sequence id.
            pad_id: padding id.
            unk_id: unknown-token id.
            add_bos: prepend ``bos_id`` in :meth:`encode` unless told otherwise.
            chat_template: jinja chat template text.
            special_ids: special token ids; defaults to the backend's special
                added tokens.

        Raises:
            TokenizerError: an id is outside the vocabulary, ``add_bos`` is set
                without a ``bos_id``, or ``vocab_size`` is smaller than the
                tokenizer's id range.
        """
        n_ids = _backend_id_count(backend)
        if vocab_size is None:
            vocab_size = n_ids
        if vocab_size < n_ids:
            raise TokenizerError(
                f"{name}: vocab_size={vocab_size} is smaller than the tokenizer's "
                f"{n_ids} ids; the model could not embed every token")
        if special_ids is None:
            special_ids = [i for i, tok in backend.get_added_tokens_decoder().items()
                           if tok.special]
        special = frozenset(int(i) for i in special_ids)
        for label, value in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id),
                             ("unk", unk_id)):
            if value is not None and not 0 <= value < vocab_size:
                raise TokenizerError(
                    f"{name}: {label}_id={value} is outside the vocabulary [0, {vocab_size})")
        bad = sorted(i for i in special if not 0 <= i < vocab_size)
        if bad:
            raise TokenizerError(f"{name}: special ids {bad[:5]} are outside [0, {vocab_size})")
        if add_bos and bos_id is None:
            raise TokenizerError(f"{name}: add_bos is set but the model has no BOS token")

        self.backend = backend
        self.name = name
        self.vocab_size = int(vocab_size)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.add_bos = bool(add_bos)
        self.chat_template = chat_template
        self.special_ids = special
        self._texts: tuple[str, ...] | None = None
        self._newline_mask: np.ndarray | None = None
        self._compiled_template: Any = None

    def __repr__(self) -> str:
        return (f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id}, pad_id={self.pad_id}, "
                f"add_bos={self.add_bos})")

    # ----------------------------------------------------------------- #
    # Construction from files.
    # ----------------------------------------------------------------- #

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """Builds the tokenizer stored in a GGUF file's metadata.

        Args:
            path: the ``.gguf`` file.

        Returns:
            The tokenizer.

        Raises:
            TokenizerError: the file is missing, unreadable or truncated, or its
                tokenizer is not a supported byte-level BPE.
        """
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"GGUF file not found: {path}")
        try:
            reader = gguf.GGUFReader(path)
        except Exception as exc:  # gguf raises ValueError/IndexError/... on bad files
            raise TokenizerError(
                f"cannot read GGUF file {path} (truncated or not a GGUF file): "
                f"{type(exc).__name__}: {exc}") from exc
        return cls.from_gguf_reader(reader, str(path))

    @classmethod
    def from_gguf_reader(cls, reader: Any, name: str) -> Tokenizer:
        """Builds the tokenizer from an already-open ``gguf.GGUFReader``.

        Args:
            reader: the open reader.
            name: the file or model name, for messages.

        Returns:
            The tokenizer.

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
            warnings.warn(f"{name}: GGUF has no tokenizer.ggml.pre; using llama.cpp's "
                          "'default' pre-tokenizer", stacklevel=2)
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
            add_bos = _PRE_KINDS[pre] == "llama3"
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
                                  ignore_merges=_PRE_KINDS[pre] == "llama3", name=name)
        _register_added_tokens(backend, tokens, special, user_defined, name)
        return cls(backend, name=name, vocab_size=n_vocab, bos_id=bos_id, eos_id=eos_id,
                   pad_id=pad_id, unk_id=unk_id, add_bos=bool(add_bos),
                   chat_template=chat_template, special_ids=special)

    @classmethod
    def from_tokenizer_json(cls, path_or_dir: str | Path) -> Tokenizer:
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
            The tokenizer.

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
        return cls(backend, name=name, vocab_size=vocab_size, bos_id=bos_id, eos_id=eos_id,
                   pad_id=pad_id, unk_id=unk_id, add_bos=add_bos, chat_template=chat_template)

    # ----------------------------------------------------------------- #
    # Encoding and decoding.
    # ----------------------------------------------------------------- #

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Turns text into token ids.

        Special tokens written in the text (e.g. ``<|im_end|>``) become their
        single ids. No EOS is ever appended.

        Args:
            text: the text.
            add_bos: prepend ``bos_id``; None means the model's default
                (:attr:`add_bos`). Pass False for text that already holds the BOS
                token, such as a rendered chat template.

        Returns:
            The ids.

        Raises:
            TypeError: ``text`` is not a string.
            TokenizerError: BOS is requested but the model has none.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return self._with_bos(ids, add_bos)

    def encode_batch(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        """Encodes several texts at once (in parallel in the backend).

        Args:
            texts: the texts.
            add_bos: as in :meth:`encode`.

        Returns:
            One id list per text.

        Raises:
            TypeError: an element is not a string.
            TokenizerError: BOS is requested but the model has none.
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode_batch expects str, element {i} is {type(text).__name__}")
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [self._with_bos(e.ids, add_bos) for e in encodings]

    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> list[int]:
        """Renders the chat template and encodes it without adding BOS.

        The template itself writes any BOS it wants, as with transformers'
        ``apply_chat_template(..., tokenize=True)``.

        Args:
            messages: chat messages, each with ``role`` and ``content``.
            add_generation_prompt: end with the assistant turn header.
            **template_kwargs: extra variables for the template.

        Returns:
            The prompt ids.

        Raises:
            TokenizerError: no chat template, or rendering failed.
        """
        text = self.apply_chat_template(messages, add_generation_prompt, **template_kwargs)
        return self.encode(text, add_bos=False)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
        """Turns ids back into text.

        Args:
            ids: a 1-D sequence or array of ids.
            skip_special: leave the special tokens out.

        Returns:
            The text (invalid UTF-8 from cut multi-byte characters shows as U+FFFD).

        Raises:
            TokenizerError: ``ids`` is not 1-D integers or holds an id outside
                ``[0, vocab_size)``.
        """
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TokenizerError(
                f"decode expects a 1-D sequence of integer ids, got shape {arr.shape} "
                f"dtype {arr.dtype}")
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise TokenizerError(f"decode: id {bad} is outside [0, {self.vocab_size})")
        return self.backend.decode(arr.tolist(), skip_special_tokens=skip_special)

    def token_texts(self) -> list[str]:
        """The decoded text of every id, in id order (computed once, then cached).

        Special tokens give their literal text; ids holding part of a UTF-8
        character give U+FFFD; ids the tokenizer does not know (padding rows of
        the embedding) give ``""``.

        Returns:
            A new list of ``vocab_size`` strings.
        """
        if self._texts is None:
            self._texts = tuple(self.backend.decode_batch(
                [[i] for i in range(self.vocab_size)], skip_special_tokens=False))
        return list(self._texts)

    def token_mask(self, predicate: Callable[[str], bool]) -> np.ndarray:
        """Marks the ids whose decoded text satisfies ``predicate``.

        Args:
            predicate: called with each id's text (see :meth:`token_texts`).

        Returns:
            Boolean array of shape ``[vocab_size]``.
        """
        if self._texts is None:
            self.token_texts()
        return np.fromiter((bool(predicate(t)) for t in self._texts), dtype=bool,
                           count=self.vocab_size)

    def newline_mask(self) -> np.ndarray:
        """Marks the ids whose text contains a newline (the default step ends).

        Returns:
            Boolean array of shape ``[vocab_size]`` (a fresh copy each call).
        """
        if self._newline_mask is None:
            self._newline_mask = self.token_mask(lambda t: "\n" in t)
        return self._newline_mask.copy()

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry (raw byte-level form) of one id.

        Args:
            token_id: the id.

        Returns:
            The token string, e.g. ``"Ġworld"`` or ``"<|im_end|>"``.

        Raises:
            TokenizerError: the tokenizer has no token with this id.
        """
        token = self.backend.id_to_token(int(token_id))
        if token is None:
            raise TokenizerError(f"{self.name}: no token with id {token_id}")
        return token

    # ----------------------------------------------------------------- #
    # Chat template.
    # ----------------------------------------------------------------- #

    def apply_chat_template(self, messages: list[dict[str, Any]],
                            add_generation_prompt: bool = True,
                            **template_kwargs: Any) -> str:
        """Renders messages with the model's own jinja chat template.

        Rendering follows transformers: an immutable sandbox with
        ``trim_blocks`` and ``lstrip_blocks``, ``raise_exception``,
        ``strftime_now`` and a non-escaping ``tojson``; the variables are
        ``messages``, ``add_generation_prompt``, the ``bos_token`` /
        ``eos_token`` / ``pad_token`` / ``unk_token`` texts and ``template_kwargs``.

        Args:
            messages: chat messages, each a dict with ``role`` and ``content``.
            add_generation_prompt: end with the header of an assistant turn.
            **template_kwargs: extra template variables (e.g. ``tools``).

        Returns:
            The prompt text.

        Raises:
            TypeError: ``messages`` is not a list of dicts.
            TokenizerError: the model has no chat template, it does not parse,
                or it raised while rendering.
        """
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise TypeError("messages must be a list of dicts with 'role' and 'content'")
        if self.chat_template is None:
            raise TokenizerError(f"{self.name}: the model has no chat template "
                                 "(no tokenizer.chat_template / chat_template in its metadata)")
        if self._compiled_template is None:
            self._compiled_template = _compile_chat_template(self.chat_template, self.name)
        variables: dict[str, Any] = {}
        for key, idx in (("bos_token", self.bos_id), ("eos_token", self.eos_id),
                         ("pad_token", self.pad_id), ("unk_token", self.unk_id)):
            if idx is not None:
                variables[key] = self.backend.id_to_token(idx)
        variables.update(template_kwargs)
        try:
            return self._compiled_template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.TemplateError as exc:
            raise TokenizerError(f"{self.name}: chat template failed: {exc}") from exc

    # ----------------------------------------------------------------- #
    # Helpers.
    # ----------------------------------------------------------------- #

    def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        """Prepends BOS when asked (or by default when ``add_bos`` is None)."""
        if add_bos is None:
            add_bos = self.add_bos
        if not add_bos:
            return list(ids)
        if self.bos_id is None:
            raise TokenizerError(f"{self.name}: BOS requested but the model has no BOS token")
        return [self.bos_id, *ids]


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


def _backend_id_count(backend: tokenizers.Tokenizer) -> int:
    """Largest id known to the backend (vocabulary or added tokens) plus one."""
    vocab = backend.get_vocab(with_added_tokens=True)
    return max(vocab.values()) + 1 if vocab else 0


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
