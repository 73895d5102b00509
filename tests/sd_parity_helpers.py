"""Shared by the Stable Diffusion parity tests: perturbed tiny torch models saved as diffusers
folders, their weights through the converter, and torch state-dict shapes as the converter lays
them out."""

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
    from jaxdiff.pretrained.convert import convert_tensors

    return convert_tensors(tensors, key_map, target, what=what)


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
