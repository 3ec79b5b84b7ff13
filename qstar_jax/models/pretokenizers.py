"""The pre-tokenizers llama.cpp uses, built from a GGUF ``tokenizer.ggml.pre`` label.

GGUF files only carry a pre-tokenizer *label* (``tokenizer.ggml.pre``); the
regular expressions behind each label live in llama.cpp
(``src/llama-vocab.cpp``, constructor of ``llm_tokenizer_bpe``) and are copied
below for the labels this module supports.
"""

from __future__ import annotations

from tokenizers import Regex, pre_tokenizers

from qstar_jax.models.tokenizer_errors import TokenizerError

__all__ = [
    "PRE_KINDS",
    "SUPPORTED_PRE_TYPES",
    "build_pre_tokenizer",
]


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
PRE_KINDS: dict[str, str] = {
    "smollm": "smollm",
    "gpt-2": "gpt2",
    "gpt2": "gpt2",
    "default": "default",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "qwen2": "qwen2",
}

SUPPORTED_PRE_TYPES: tuple[str, ...] = tuple(sorted(PRE_KINDS))


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
    kind = PRE_KINDS.get(pre_type)
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
