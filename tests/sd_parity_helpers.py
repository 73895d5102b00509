"""Shared by the Stable Diffusion parity tests: perturbed tiny torch models saved as diffusers
folders, and their weights read back into jaxdiff params through the key maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def perturb_(torch_model, seed: int, scale: float = 0.05) -> None:
    """Adds N(0, scale^2) noise to every parameter in place, so that zero-initialised layers (and
    unit norm scales / zero biases) cannot hide a wrong mapping."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def save_folder(torch_model, folder: Path) -> Path:
    torch_model.save_pretrained(folder, safe_serialization=True)
    return folder


def read_folder(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, safetensors tensors as numpy) of a saved component folder."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    return config, load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def convert(tensors, key_map, target, what: str):
    """Torch tensors -> jaxdiff params with the structure of `target` (ShapeDtypeStructs)."""
    try:
        from jaxdiff.pretrained.convert import convert_tensors
    except ImportError:  # until the loader's converter lands (issue 15, helper F)
        convert_tensors = _convert_tensors
    return convert_tensors(tensors, key_map, target, what=what)


def _convert_tensors(tensors, key_map, target, *, what):
    import jax

    flat_target = {"/".join(str(k.key) for k in path): leaf for path, leaf
                   in jax.tree_util.tree_flatten_with_path(target)[0]}
    flat, problems = {}, []
    for name, value in tensors.items():
        rule = key_map(name)
        if rule is None:
            continue
        path, kind = rule
        value = np.asarray(value, np.float32)
        value = {"conv": lambda a: a.transpose(2, 3, 1, 0), "linear": lambda a: a.T,
                 "copy": lambda a: a}[kind](value)
        if path not in flat_target or path in flat:
            problems.append(f"unexpected {name} -> {path}")
        elif value.shape != tuple(flat_target[path].shape):
            problems.append(f"{name}: {value.shape} != {flat_target[path].shape}")
        else:
            flat[path] = value
    problems += [f"missing {p}" for p in sorted(set(flat_target) - set(flat))]
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))
    nested: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


def torch_meta_shapes(torch_model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}


def converted_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The shape a torch tensor has after the converter's transform of `kind`."""
    if kind == "conv":
        o, i, h, w = shape
        return (h, w, i, o)
    if kind == "linear":
        return tuple(reversed(shape))
    return tuple(shape)
