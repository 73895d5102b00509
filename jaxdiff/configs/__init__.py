"""Config presets (ml_collections). `get_config(name)` returns a fresh ConfigDict."""

from __future__ import annotations

import importlib

from jaxdiff.validation import InputError, check_choice

PRESETS = {
    "digits": "jaxdiff.configs.digits",
    "digits_cond": "jaxdiff.configs.digits_cond",
    "digits_flow": "jaxdiff.configs.digits_flow",
    "cifar10": "jaxdiff.configs.cifar10",
    "celeba64": "jaxdiff.configs.celeba64",
    "shapes_vae": "jaxdiff.configs.shapes_vae",
    "shapes_t2i": "jaxdiff.configs.shapes_t2i",
}


def get_config(name: str = "digits"):
    """Returns the preset `name` (see PRESETS) as a new, locked ConfigDict.

    Locked: values may be overridden, but a key the preset does not define is refused (a typo
    never becomes a silently ignored setting). The preset is the only schema: code reads every
    key from the config, with no default of its own.

    >>> config = get_config("digits_cond")
    >>> config.preset, config.model.num_classes
    ('digits_cond', 10)
    """
    check_choice("config preset", name, PRESETS)
    config = importlib.import_module(PRESETS[name]).get_config()
    config.preset = name
    config.lock()
    return config


def complete_saved_config(saved: dict, source: str = "the saved config"):
    """A saved config (a dict read from `config.json`) as a locked ConfigDict of its preset.

    Keys a newer jaxdiff added to the preset, which an older `config.json` lacks, take the
    value of the preset the config records (`preset`; "digits" when it records none), and keys
    this version no longer knows are dropped; either case prints a note naming the keys.
    Raises InputError when a saved value has a type the preset cannot hold.

    >>> config = complete_saved_config({"preset": "digits", "train": {"num_steps": 7}},
    ...                                source="an example")  # prints a note on stderr
    >>> config.train.num_steps, config.sampling.spacing
    (7, 'trailing')
    """
    import sys

    name = saved.get("preset") or "digits"
    if name not in PRESETS:
        raise InputError(f"{source} records the preset {name!r}, which this version does not "
                         f"have; known presets: {sorted(PRESETS)}")
    config = get_config(name)
    missing, unknown = [], []
    _fill(config, saved, "", missing, unknown, source)
    missing = [k for k in missing if k != "preset"]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"keys it lacks take the values of preset {name!r}: {missing}")
        if unknown:
            parts.append(f"keys this version does not know are ignored: {unknown}")
        print(f"note: {source} was saved by an older jaxdiff; {'; '.join(parts)}",
              file=sys.stderr)
    return config


def _fill(node, saved: dict, prefix: str, missing: list, unknown: list, source: str) -> None:
    """Sets node's keys to the saved values, recursively, collecting missing/unknown keys."""
    for key in node.keys():
        dotted = f"{prefix}{key}"
        if key not in saved:
            missing.append(dotted)
            continue
        value = saved[key]
        if hasattr(node[key], "keys"):
            if not isinstance(value, dict):
                raise InputError(f"{source}: {dotted} should be a group of keys; got {value!r}")
            _fill(node[key], value, f"{dotted}.", missing, unknown, source)
            continue
        try:
            node[key] = _lists_to_tuples(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"{source}: {dotted}={value!r} does not fit the preset's value "
                             f"{node[key]!r} ({e})") from None
    unknown.extend(f"{prefix}{key}" for key in saved if key not in node)


def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value
