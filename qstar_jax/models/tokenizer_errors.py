"""The error raised by the tokenizer modules (kept apart so they need not import each other)."""

from __future__ import annotations

__all__ = ["TokenizerError"]


class TokenizerError(ValueError):
    """A tokenizer could not be built or used; the message names the cause."""
