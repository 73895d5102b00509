"""`--config.<key>=<value>` command-line overrides applied to an ml_collections ConfigDict."""

from __future__ import annotations

import ast

from jaxdiff.validation import InputError


def _parse_value(raw: str, current):
    text = raw.strip()
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise InputError(f"expected true or false, got {raw!r}")
    if isinstance(current, (tuple, list)):
        text = text.strip("()[] ")
        if not text:
            return ()
        return tuple(_parse_value(part, current[0] if current else None)
                     for part in text.split(","))
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            value = float(text)
            if value.is_integer():
                return int(value)
            raise InputError(f"expected an integer, got {raw!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise InputError(f"expected a number, got {raw!r}") from None
    if isinstance(current, str):
        return text
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_override_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.a.b=v` / `--config.a.b v` arguments from the others."""
    rest, overrides = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key_value = arg[len("--config."):]
            if "=" in key_value:
                key, value = key_value.split("=", 1)
            elif i + 1 < len(argv):
                key, value = key_value, argv[i + 1]
                i += 1
            else:
                raise InputError(f"{arg} needs a value: --config.<key>=<value>")
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def apply_overrides(config, overrides: dict[str, str]):
    """Sets each dotted key to its parsed value, with the type of the current value."""
    for dotted, raw in overrides.items():
        keys = dotted.split(".")
        node = config
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys") or key not in node:
                where = ".".join(keys[:depth]) or "config"
                options = sorted(node.keys()) if hasattr(node, "keys") else []
                raise InputError(f"unknown config key {dotted!r}: {where} has no {key!r}; "
                                 f"its keys are {options}")
            if depth < len(keys) - 1:
                node = node[key]
        leaf = keys[-1]
        current = node[leaf]
        try:
            value = _parse_value(raw, current)
            node[leaf] = value
        except (ValueError, TypeError) as e:
            raise InputError(f"bad value for --config.{dotted}: {raw!r} ({e}); the current "
                             f"value is {current!r}") from None
    return config
