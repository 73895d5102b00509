"""diffusers UNet2DConditionModel state-dict names -> jaxdiff `UNet2DCondition` parameter paths.

The spatial transformers' `proj_in` / `proj_out` are 1x1 convolutions in SD 1.x and linear layers
in SD 2.x (`use_linear_projection`), which the names alone do not tell: the key map is made for a
config by `make_key_map(kwargs)`.
"""

from __future__ import annotations

from jaxdiff.pretrained.key_rules import make_key_map as _make_key_map

_BLOCK = r"((?:down_blocks|up_blocks)\.\d+|mid_block)"
_TBLOCK = _BLOCK + r"(\.attentions\.\d+\.transformer_blocks\.\d+)"


def rules(use_linear_projection: bool) -> tuple[tuple[str, str, str], ...]:
    """(pattern, template, kind) rules for a UNet with or without linear projections."""
    projection = "linear" if use_linear_projection else "conv"
    return (
        (r"(conv_in|conv_out)", r"\1", "conv"),
        (r"conv_norm_out", r"conv_norm_out", "norm"),
        (r"time_embedding\.(linear_1|linear_2)", r"time_embedding.\1", "linear"),
        (_BLOCK + r"\.resnets\.(\d+)\.(norm1|norm2)", r"\1.resnets.\2.\3", "norm"),
        (_BLOCK + r"\.resnets\.(\d+)\.(conv1|conv2)", r"\1.resnets.\2.\3", "conv"),
        (_BLOCK + r"\.resnets\.(\d+)\.conv_shortcut", r"\1.resnets.\2.shortcut", "conv"),
        (_BLOCK + r"\.resnets\.(\d+)\.time_emb_proj", r"\1.resnets.\2.temb_proj", "linear"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv", r"down_blocks.\1.resample", "conv"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv", r"up_blocks.\1.resample", "conv"),
        (_BLOCK + r"\.attentions\.(\d+)\.norm", r"\1.attentions.\2.norm", "norm"),
        (_BLOCK + r"\.attentions\.(\d+)\.(proj_in|proj_out)", r"\1.attentions.\2.\3", projection),
        (_TBLOCK + r"\.(norm1|norm2|norm3)", r"\1\2.\3", "norm"),
        (_TBLOCK + r"\.(attn1|attn2)\.(to_q|to_k|to_v)", r"\1\2.\3.\4", "linear"),
        (_TBLOCK + r"\.(attn1|attn2)\.to_out\.0", r"\1\2.\3.to_out", "linear"),
        (_TBLOCK + r"\.ff\.net\.0\.proj", r"\1\2.ff.proj", "linear"),
        (_TBLOCK + r"\.ff\.net\.2", r"\1\2.ff.out", "linear"),
    )


def make_key_map(kwargs: dict):
    """key_map(torch_name) -> (jaxdiff path, kind) for a UNet built from `kwargs` (the output of
    `unet_condition_kwargs_from_config`); the key map raises KeyError for unknown names."""
    return _make_key_map(rules(bool(kwargs.get("use_linear_projection", False))),
                         "UNet2DConditionModel")
