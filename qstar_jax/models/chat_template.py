"""Model chat templates: jinja compiled and rendered as transformers does.

Templates run in an immutable jinja sandbox with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``,
``strftime_now`` and a non-escaping ``tojson``, as in transformers'
``_compile_jinja_template``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qstar_jax.models.tokenizer_errors import TokenizerError

__all__ = [
    "compile_chat_template",
    "render_chat_template",
]


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


def compile_chat_template(source: str, name: str) -> Any:
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


def render_chat_template(template: Any, messages: Sequence[Mapping[str, Any]],
                         add_generation_prompt: bool, variables: Mapping[str, Any],
                         name: str) -> str:
    """Renders a compiled chat template.

    Args:
        template: a template from :func:`compile_chat_template`.
        messages: chat messages, each a mapping with ``role`` and ``content``
            (copied into plain dicts before rendering).
        add_generation_prompt: end with the header of an assistant turn.
        variables: the other template variables (special token texts, extras).
        name: model name for error messages.

    Returns:
        The rendered text.

    Raises:
        TokenizerError: the template raised while rendering.
    """
    try:
        return template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.TemplateError as exc:
        raise TokenizerError(f"{name}: chat template failed: {exc}") from exc
