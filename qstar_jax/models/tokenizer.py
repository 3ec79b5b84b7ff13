"""Byte-level BPE tokenizer built from GGUF metadata or a Hugging Face tokenizer.json.

The :class:`Tokenizer` wraps a ``tokenizers.Tokenizer`` and adds what search over
reasoning steps needs: the model's special ids, per-id token texts and boolean
masks over the vocabulary (e.g. the newline tokens that end a step), and the
model's own jinja chat template rendered the way Hugging Face transformers does.

The pieces live beside it: :mod:`qstar_jax.models.pretokenizers` (llama.cpp's
pre-tokenizers per GGUF label), :mod:`qstar_jax.models.tokenizer_files` (reading
GGUF metadata and tokenizer.json), :mod:`qstar_jax.models.chat_template`
(the jinja sandbox) and :mod:`qstar_jax.models.tokenizer_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from qstar_jax.models.chat_template import compile_chat_template, render_chat_template
from qstar_jax.models.pretokenizers import SUPPORTED_PRE_TYPES, build_pre_tokenizer
from qstar_jax.models.tokenizer_errors import TokenizerError
from qstar_jax.models.tokenizer_files import (
    TokenizerParts,
    open_gguf,
    read_gguf_tokenizer,
    read_tokenizer_json,
)

__all__ = [
    "SUPPORTED_PRE_TYPES",
    "Tokenizer",
    "TokenizerError",
    "build_pre_tokenizer",
]


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
        return cls.from_gguf_reader(open_gguf(path), str(Path(path)))

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
        return cls._from_parts(read_gguf_tokenizer(reader, name))

    @classmethod
    def from_tokenizer_json(cls, path_or_dir: str | Path) -> Tokenizer:
        """Loads a Hugging Face ``tokenizer.json`` and the configs beside it.

        See `qstar_jax.models.tokenizer_files.read_tokenizer_json` for which
        files are read and how BOS, special tokens and the chat template are
        chosen.

        Args:
            path_or_dir: the ``tokenizer.json`` file or the directory holding it.

        Raises:
            TokenizerError: a file is missing or not valid JSON, the tokenizer
                does not load, or a named special token is not in the vocabulary.
        """
        return cls._from_parts(read_tokenizer_json(path_or_dir))

    @classmethod
    def _from_parts(cls, parts: TokenizerParts) -> Tokenizer:
        """Builds the tokenizer from what a file reader returned."""
        return cls(parts.backend, name=parts.name, vocab_size=parts.vocab_size,
                   bos_id=parts.bos_id, eos_id=parts.eos_id, pad_id=parts.pad_id,
                   unk_id=parts.unk_id, add_bos=parts.add_bos,
                   chat_template=parts.chat_template, special_ids=parts.special_ids)

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
            self._compiled_template = compile_chat_template(self.chat_template, self.name)
        variables: dict[str, Any] = {}
        for key, idx in (("bos_token", self.bos_id), ("eos_token", self.eos_id),
                         ("pad_token", self.pad_id), ("unk_token", self.unk_id)):
            if idx is not None:
                variables[key] = self.backend.id_to_token(idx)
        variables.update(template_kwargs)
        return render_chat_template(self._compiled_template, messages,
                                    add_generation_prompt, variables, self.name)

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


def _backend_id_count(backend: tokenizers.Tokenizer) -> int:
    """Largest id known to the backend (vocabulary or added tokens) plus one."""
    vocab = backend.get_vocab(with_added_tokens=True)
    return max(vocab.values()) + 1 if vocab else 0
