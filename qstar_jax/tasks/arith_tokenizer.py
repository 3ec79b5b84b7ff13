"""A small word-and-digit tokenizer for tiny models trained from scratch.

Text is cut into pieces by one regular expression, each piece optionally
carrying its leading space: a word (`" pens"`), a single digit (`" 3"`, `"4"`),
the answer marker (`" ####"`), one other printable character (`" +"`, `"."`),
a newline, or a lone space. A piece in the vocabulary is one token; a word
that is not is spelled out in characters (`" Zed"` -> `" "`, `"Z"`, `"e"`,
`"d"`). Every printable ASCII character and the newline are in the vocabulary,
so any such text round-trips exactly (`decode(encode(t)) == t`); any other
character (a tab, a non-ASCII letter) raises `ValueError` naming it.

Numbers are written digit by digit (a leading-space digit starts a number), so
the model computes with digits instead of memorising a table of numbers,
while words are single tokens, which keeps ArithChain problems around 60
tokens instead of 250 characters.

Ids: 0 pad, 1 bos, 2 eos, then single characters, then digits and symbols
with a leading space, then words (both spellings: `"has"` and `" has"`).
"""

from __future__ import annotations

import json
import re
import string
from typing import Callable, Sequence

import numpy as np

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
_CHARS = tuple(string.digits + string.ascii_letters + string.punctuation
               + " \n")
_PIECE = re.compile(r" ?####| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]|\n| |.",
                    re.DOTALL)


class ArithTokenizer:
    """Word-level vocabulary plus single characters; special ids 0, 1, 2.

    Example:
      >>> tok = ArithTokenizer(["has", "pens"])
      >>> tok.decode(tok.encode("Mia has 34 pens.")) == "Mia has 34 pens."
      True
    """

    def __init__(self, words: Sequence[str] = ()):
        for w in words:
            if not re.fullmatch(r"[A-Za-z]+", w):
                raise ValueError(f"words must be ASCII letters only, got {w!r}")
        self.words = tuple(sorted(set(words)))
        texts = [PAD, BOS, EOS] + list(_CHARS)
        texts += [" " + c for c in _CHARS if c not in " \n"]
        texts += [" ####", "####"]
        for w in self.words:
            texts += [w, " " + w] if len(w) > 1 else [" " + w]
        seen, unique = set(), []
        for t in texts:
            if t not in seen:
                seen.add(t)
                unique.append(t)
        self._texts = unique
        self._ids = {t: i for i, t in enumerate(unique)}

    @property
    def vocab_size(self) -> int:
        """V, the number of token ids."""
        return len(self._texts)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    def encode(self, text: str, *, add_bos: bool = False,
               add_eos: bool = False) -> list[int]:
        """Token ids of `text`.

        Args:
          text: printable ASCII plus newlines.
          add_bos: prepend the bos id.
          add_eos: append the eos id.

        Returns:
          The ids, a list of ints.

        Raises:
          ValueError: a character outside the vocabulary (named in the error).
        """
        ids = [self.bos_id] if add_bos else []
        for match in _PIECE.finditer(text):
            piece = match.group()
            token = self._ids.get(piece)
            if token is not None:
                ids.append(token)
                continue
            for ch in piece:
                token = self._ids.get(ch)
                if token is None:
                    raise ValueError(
                        f"character {ch!r} (U+{ord(ch):04X}) at offset "
                        f"{match.start()} is not in the tokenizer's "
                        "vocabulary (printable ASCII and newline only)")
                ids.append(token)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray, *,
               skip_special: bool = True) -> str:
        """The text of `ids`; special tokens are dropped unless asked for.

        Raises:
          ValueError: an id outside [0, V).
        """
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
            if i < 3 and skip_special:
                continue
            out.append(self._texts[i])
        return "".join(out)

    def token_texts(self) -> list[str]:
        """[V] the text of every id (special tokens as '<pad>' etc.)."""
        return list(self._texts)

    def token_mask(self, pred: Callable[[str], bool]) -> np.ndarray:
        """[V] bool, True where `pred(token_text)` holds (specials excluded)."""
        mask = np.array([pred(t) for t in self._texts], dtype=bool)
        mask[:3] = False
        return mask

    def newline_mask(self) -> np.ndarray:
        """[V] bool: tokens that contain a newline (the step delimiter)."""
        return self.token_mask(lambda t: "\n" in t)

    def eos_mask(self) -> np.ndarray:
        """[V] bool: only the eos id."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self.eos_id] = True
        return mask

    def answer_marker_mask(self) -> np.ndarray:
        """[V] bool: tokens holding the answer marker '####'."""
        return self.token_mask(lambda t: "####" in t)

    def to_json(self) -> dict:
        """A JSON-able description (the vocabulary is rebuilt from it)."""
        return {"type": "ArithTokenizer", "version": 1,
                "words": list(self.words), "token_texts": self._texts}

    @classmethod
    def from_json(cls, data: dict) -> "ArithTokenizer":
        """Inverse of `to_json`; checks the stored vocabulary matches."""
        if data.get("type") != "ArithTokenizer":
            raise ValueError(f"not an ArithTokenizer description: "
                             f"type={data.get('type')!r}")
        tok = cls(data["words"])
        if "token_texts" in data and data["token_texts"] != tok._texts:
            raise ValueError("stored vocabulary does not match the one "
                             "rebuilt from its words (version mismatch)")
        return tok

    def save(self, path: str) -> None:
        """Writes the tokenizer as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "ArithTokenizer":
        """Reads a tokenizer written by `save`."""
        with open(path) as f:
            return cls.from_json(json.load(f))
