"""Splitting an NNX module into (graphdef, params) and merging it back: the functional use that
every jaxdiff model shares (params are nested dicts with string keys, as orbax restores them)."""

from __future__ import annotations

from typing import Any

from flax import nnx

Params = dict[str, Any]


def stringify_keys(tree):
    """Nested dicts with every key a string (list indices of nnx.List become "0", "1", ...)."""
    if isinstance(tree, dict):
        return {str(k): stringify_keys(v) for k, v in tree.items()}
    return tree


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, Params]:
    """(graphdef, params) of a module holding only nnx.Param state."""
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, stringify_keys(nnx.to_pure_dict(state))


def merge_params(graphdef: nnx.GraphDef, params: Params) -> Any:
    """The module of `graphdef` with `params` (string or integer list keys) put in."""
    return nnx.merge(graphdef, nnx.State(nnx.restore_int_paths(params)))
