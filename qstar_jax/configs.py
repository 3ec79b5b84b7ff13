"""Experiment configs: frozen dataclasses with every field a command-line flag.

An experiment's config is a frozen keyword-only dataclass (nested dataclasses
allowed, such as a search config inside an experiment config).
`add_config_flags` adds one flag per leaf field, named by its dotted path
(`--seed`, `--qstar.lam`), typed by the field's default; `config_from_args`
builds the overridden config; `config_to_dict` gives the JSON saved with the
results. Tuples take comma-separated values (`--budgets 4,8,16`), booleans
`true`/`false`, `None`-able fields the word `none`.

Example:
  >>> parser = argparse.ArgumentParser()
  >>> add_config_flags(parser, MainConfig())
  >>> config = config_from_args(MainConfig(), parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def _leaves(config, prefix: str = ""):
    """(dotted name, field, value, type hint) of every leaf field of a
    dataclass."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        name = prefix + field.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _leaves(value, name + ".")
        else:
            yield name, field, value, hints.get(field.name)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _tuple_item(hint) -> Any:
    """A default item of the tuple type `hint` (`tuple[float, ...]`: 0.0),
    so an empty default still parses its items by type (else text)."""
    kinds = [k for k in typing.get_args(hint) if k is not Ellipsis]
    return kinds[0]() if kinds and kinds[0] in (bool, int, float) else ""


def _parser_for(value: Any, name: str, hint=None):
    """A function parsing one flag's text into the type of `value` (an
    empty tuple: the item type of its field's `hint`)."""
    if isinstance(value, bool):
        return _parse_bool
    if isinstance(value, tuple):
        item = _parser_for(value[0] if value else _tuple_item(hint), name)

        def parse_tuple(text: str):
            return tuple(item(x) for x in text.split(",") if x != "")
        return parse_tuple
    if isinstance(value, (int, float, str)):
        kind = type(value)

        def parse_scalar(text: str):
            try:
                return kind(text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(
                    f"--{name}: expected {kind.__name__}, got {text!r}"
                ) from err
        return parse_scalar
    if value is None:
        return lambda text: None if text.lower() == "none" else text
    raise TypeError(f"config field {name} has an unsupported default "
                    f"{value!r} ({type(value).__name__})")


def add_config_flags(parser: argparse.ArgumentParser, config) -> None:
    """Adds `--<dotted.name>` for every leaf field of `config` (a frozen
    dataclass instance), with its default shown in --help."""
    for name, field, value, hint in _leaves(config):
        parse = _parser_for(value, name, hint)
        doc = field.metadata.get("help", "") if field.metadata else ""
        shown = ",".join(map(str, value)) if isinstance(value, tuple) \
            else value
        parser.add_argument(f"--{name}", dest=f"config.{name}", type=parse,
                            default=None, metavar=type(value).__name__,
                            help=f"{doc} (default: {shown})".strip())


def _apply(config, overrides: dict):
    """`config` with `overrides` (field -> value, or -> a dict of the nested
    config's overrides) applied, each dataclass replaced once with all its
    changes, so its own checks see the final values together."""
    changes = {}
    for name, value in overrides.items():
        changes[name] = (_apply(getattr(config, name), value)
                         if isinstance(value, dict) else value)
    return dataclasses.replace(config, **changes)


def config_from_args(config, args: argparse.Namespace):
    """`config` with the flags given on the command line applied (the
    dataclasses' own checks run on the result)."""
    overrides: dict = {}
    for key, value in sorted(vars(args).items()):
        if key.startswith("config.") and value is not None:
            *parents, leaf = key[len("config."):].split(".")
            level = overrides
            for name in parents:
                level = level.setdefault(name, {})
            level[leaf] = value
    return _apply(config, overrides)


def config_to_dict(config) -> dict:
    """The config as JSON-able nested dicts (tuples as lists)."""
    def plain(x):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name))
                    for f in dataclasses.fields(x)}
        if isinstance(x, (tuple, list)):
            return [plain(v) for v in x]
        return x
    return plain(config)


def config_from_dict(cls: type, data: dict):
    """Inverse of `config_to_dict` for a config class (nested dataclasses
    and tuples rebuilt from their field types)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value, hint = data[field.name], hints[field.name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)
