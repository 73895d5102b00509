"""diffusers UNet2DModel state-dict names <-> jaxdiff `UNet` parameter paths.

jaxdiff's attention keeps q, k and v as one fused (C, 3C) projection where diffusers has three
Linear layers (`to_q`/`to_k`/`to_v`, or `query`/`key`/`value` in the older checkpoints, whose
`proj_attn` / `group_norm` are today's `to_out.0` / `group_norm`). `fuse_qkv` concatenates them
into one `<attention>.qkv` tensor before conversion and `split_qkv` splits it after export, so the
names themselves map one to one: the table of names is built from the model's own parameter paths
(`name_table`), which makes it right for every configuration by construction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from jaxdiff.pretrained.convert import Rule, flatten_params

_LEVEL_PARTS = {"res": "resnets", "attn": "attentions"}
_MODULES = {"shortcut": "conv_shortcut", "temb_proj": "time_emb_proj", "norm": "group_norm",
            "out": "to_out.0", "qkv": "qkv"}
_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out",
        "time_mlp1": "time_embedding.linear_1", "time_mlp2": "time_embedding.linear_2",
        "mid_res1": "mid_block.resnets.0", "mid_res2": "mid_block.resnets.1",
        "mid_attn": "mid_block.attentions.0"}
_QKV = (("to_q", "query"), ("to_k", "key"), ("to_v", "value"))
_LEGACY = {"proj_attn": "to_out.0"}


def _module_name(path: list[str]) -> str:
    """jaxdiff module path (without the leaf) -> diffusers module name."""
    head = path[0]
    if head in _TOP:
        name, rest = _TOP[head], path[1:]
    elif head in ("down", "up"):
        blocks = "down_blocks" if head == "down" else "up_blocks"
        if path[2] == "resample":
            sampler = "downsamplers" if head == "down" else "upsamplers"
            return f"{blocks}.{path[1]}.{sampler}.0.conv"
        name, rest = f"{blocks}.{path[1]}.{_LEVEL_PARTS[path[2]]}.{path[3]}", path[4:]
    else:
        raise KeyError(f"no diffusers name for the jaxdiff parameter {'/'.join(path)!r}")
    return ".".join([name] + [_MODULES.get(p, p) for p in rest])


def name_table(target) -> dict[str, Rule]:
    """{diffusers name (q, k, v fused as `.qkv`): (jaxdiff path, kind)} for every parameter of
    `target` (the params pytree, or its `jax.eval_shape`)."""
    table = {}
    for path, leaf in flatten_params(target).items():
        parts = path.split("/")
        if parts == ["class_embedding"]:
            table["class_embedding.weight"] = (path, "copy")
            continue
        *module, leaf_name = parts
        torch_leaf = "bias" if leaf_name == "bias" else "weight"
        if leaf_name == "kernel":
            kind = "conv" if len(leaf.shape) == 4 else "linear"
        else:
            kind = "copy"  # biases and GroupNorm scales
        table[f"{_module_name(module)}.{torch_leaf}"] = (path, kind)
    return table


def make_key_map(kwargs: Mapping):
    """key_map(diffusers name) -> (jaxdiff path, kind) for `UNet(**kwargs)`, after `fuse_qkv`;
    raises KeyError for a name the model does not have. Legacy `proj_attn` is `to_out.0`."""
    from jaxdiff.pretrained.pixel_unet import abstract_unet

    table = name_table(abstract_unet(dict(kwargs))[1])

    def key_map(name: str) -> Rule:
        for old, new in _LEGACY.items():
            name = re.sub(rf"\.{old}\.(weight|bias)$", rf".{new}.\1", name)
        if name not in table:
            raise KeyError(f"{name!r} is not a parameter of this UNet2DModel")
        return table[name]

    return key_map


def fuse_qkv(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replaces each attention's q, k, v tensors (either naming) by one `<attention>.qkv` tensor,
    concatenated on the output axis ((3C, C) weight, (3C,) bias). An attention that lacks one of
    the three keeps its tensors unfused, so that the converter reports them."""
    out = dict(tensors)
    pattern = re.compile(r"(.*\.attentions\.\d+)\.(to_q|to_k|to_v|query|key|value)\."
                         r"(weight|bias)")
    groups: dict[tuple[str, str], dict[int, str]] = {}
    for name in tensors:
        match = pattern.fullmatch(name)
        if match:
            prefix, proj, leaf = match.groups()
            index = next(i for i, names in enumerate(_QKV) if proj in names)
            groups.setdefault((prefix, leaf), {})[index] = name
    for (prefix, leaf), names in groups.items():
        if sorted(names) == [0, 1, 2]:
            out[f"{prefix}.qkv.{leaf}"] = np.concatenate(
                [np.asarray(out.pop(names[i])) for i in range(3)], axis=0)
    return out


def split_qkv(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `fuse_qkv`, with today's names (`to_q`, `to_k`, `to_v`)."""
    out = {}
    for name, value in tensors.items():
        match = re.fullmatch(r"(.*)\.qkv\.(weight|bias)", name)
        if match is None:
            out[name] = value
            continue
        prefix, leaf = match.groups()
        for (new, _), part in zip(_QKV, np.split(np.asarray(value), 3, axis=0)):
            out[f"{prefix}.{new}.{leaf}"] = np.ascontiguousarray(part)
    return out
