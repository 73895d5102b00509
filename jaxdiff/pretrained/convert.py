"""Torch state dicts (as numpy arrays) -> jaxdiff parameter pytrees, checked name by name.

The conversion is data: a model's key map turns each torch name into a jaxdiff parameter path and
a layer kind, and the kind alone says how the tensor is laid out differently (maxdiffusion's
rename-and-reshape). Every tensor must be consumed and every parameter filled with the right
shape; otherwise one error lists all that is missing, unexpected or mis-shaped, and nothing
half-loaded is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxdiff.validation import InputError

Rule = tuple[str, str]
KeyMap = Callable[[str], "Rule | None"]

# torch layout -> jaxdiff layout for each layer kind.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # OIHW -> HWIO
    "linear": lambda a: a.T,                     # (out, in) -> (in, out)
    "copy": lambda a: a,                         # biases, norm scales, embedding tables
}
# the inverse, for writing diffusers folders
INVERSE_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
    "linear": lambda a: a.T,
    "copy": lambda a: a,
}
_LISTED = 20  # names shown per kind of problem; the count says how many there are in all


class WeightsError(InputError):
    """Weights that do not fit the model: missing, unexpected or mis-shaped tensors, or a weights
    file that cannot be read."""


def _path_key(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_params(params) -> dict[str, Any]:
    """{"a/b/kernel": leaf} of a nested params pytree (string keys; list indices as "0", "1")."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(_path_key(k) for k in path): leaf for path, leaf in leaves}


def unflatten_params(flat: Mapping[str, Any]) -> dict:
    """The nested dict of `flat` ({"a/b/kernel": leaf} -> {"a": {"b": {"kernel": leaf}}})."""
    nested: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"{len(names)} {kind}: {shown}{more}"


def convert_tensors(tensors: Mapping[str, np.ndarray], key_map: KeyMap, target, *, what: str,
                    dtype=None) -> dict:
    """Torch-named tensors -> jaxdiff params with the structure of `target`.

    Args:
      tensors: {torch state-dict name: array}, e.g. from `safetensors.numpy.load_file`.
      key_map: torch name -> (jaxdiff path with "/" separators, kind in TRANSFORMS), or None for
        a known buffer to drop (e.g. CLIP's `position_ids`); raises KeyError for an unknown name.
      target: nested dict of jax.ShapeDtypeStruct (or arrays): `jax.eval_shape` of the params.
      what: names the weights in the error message (e.g. a file path).
      dtype: the params' dtype (default float32; "bfloat16" on request).

    Returns:
      Nested dict of numpy arrays, exactly the leaves of `target`.

    Raises:
      WeightsError: listing every missing, unexpected and mis-shaped name, when there are any.

    Example:
      >>> import numpy as np, jax
      >>> target = {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 2, 4), np.float32)}}
      >>> out = convert_tensors({"conv.weight": np.zeros((4, 2, 3, 3))},
      ...                       lambda n: ("conv/kernel", "conv"), target, what="demo")
      >>> out["conv"]["kernel"].shape
      (3, 3, 2, 4)
    """
    import jax.numpy as jnp

    out_dtype = jnp.dtype(dtype or "float32")
    expected = flatten_params(target)
    filled: dict[str, np.ndarray] = {}
    unexpected, misshaped, duplicated = [], [], []
    misshaped_paths = set()  # reported as mis-shaped, not again as missing
    for name in sorted(tensors):
        try:
            rule = key_map(name)
        except KeyError:
            unexpected.append(name)
            continue
        if rule is None:
            continue
        path, kind = rule
        if path not in expected:
            unexpected.append(f"{name} (-> {path})")
            continue
        if path in filled:
            duplicated.append(f"{name} (-> {path})")
            continue
        value = TRANSFORMS[kind](np.asarray(tensors[name]))
        want = tuple(expected[path].shape)
        if value.shape != want:
            misshaped.append(f"{name} {tuple(np.shape(tensors[name]))} (-> {path} needs "
                             f"{want} after the {kind} layout change)")
            misshaped_paths.add(path)
            continue
        filled[path] = value.astype(out_dtype)
    missing = sorted(set(expected) - set(filled) - misshaped_paths)
    problems = [_listing(kind, names) for kind, names in (
        ("missing parameters", missing), ("unexpected tensors", unexpected),
        ("mis-shaped tensors", misshaped), ("tensors mapped twice", duplicated)) if names]
    if problems:
        raise WeightsError(f"the weights in {what} do not fit the model built from its config: "
                           + "; ".join(problems) + ". Nothing was loaded. Check that the weights "
                           "and config.json come from the same model.")
    return unflatten_params(filled)


def export_tensors(params, key_map: KeyMap, torch_names: list[str], *, what: str
                   ) -> dict[str, np.ndarray]:
    """jaxdiff params -> torch-named float32 arrays, the inverse of `convert_tensors`.

    `torch_names` are the names the torch model expects (e.g. the state-dict keys of the
    diffusers model built from the exported config); every one must map onto a parameter and
    every parameter must be used.
    """
    flat = {k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()}
    out, unknown = {}, []
    for name in torch_names:
        try:
            rule = key_map(name)
        except KeyError:
            rule = None
        if rule is None or rule[0] not in flat:
            unknown.append(name)
            continue
        path, kind = rule
        out[name] = np.ascontiguousarray(INVERSE_TRANSFORMS[kind](flat[path]))
    used = {key_map(n)[0] for n in out}
    unused = sorted(set(flat) - used)
    if unknown or unused:
        problems = [_listing(kind, names) for kind, names in (
            ("torch names without a parameter", unknown), ("parameters not exported", unused))
            if names]
        raise WeightsError(f"cannot export {what}: " + "; ".join(problems))
    return out
