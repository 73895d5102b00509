"""Config presets (ml_collections). `get_config(name)` returns a fresh ConfigDict."""

from __future__ import annotations

import importlib

from jaxdiff.validation import check_choice

PRESETS = {
    "digits": "jaxdiff.configs.digits",
    "digits_cond": "jaxdiff.configs.digits_cond",
    "cifar10": "jaxdiff.configs.cifar10",
    "celeba64": "jaxdiff.configs.celeba64",
}


def get_config(name: str = "digits"):
    """Returns the preset `name` (see PRESETS) as a new, unlocked-for-overrides ConfigDict."""
    check_choice("config preset", name, PRESETS)
    return importlib.import_module(PRESETS[name]).get_config()
