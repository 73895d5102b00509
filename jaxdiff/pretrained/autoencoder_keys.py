"""diffusers AutoencoderKL state-dict names -> jaxdiff `AutoencoderKL` parameter paths.

Covers the attention names older checkpoints use (`query`, `key`, `value`, `proj_attn`), which
diffusers renames to `to_q`, `to_k`, `to_v`, `to_out.0` when loading.
"""

from __future__ import annotations

from jaxdiff.pretrained.key_rules import Rule
from jaxdiff.pretrained.key_rules import make_key_map as _make_key_map

_RES = r"((?:encoder\.down_blocks|decoder\.up_blocks)\.\d+|(?:encoder|decoder)\.mid_block)"
_ATTN = r"((?:encoder|decoder)\.mid_block\.attentions\.0)"

RULES = (
    (r"(encoder|decoder)\.(conv_in|conv_out)", r"\1.\2", "conv"),
    (r"(encoder|decoder)\.conv_norm_out", r"\1.conv_norm_out", "norm"),
    (r"(quant_conv|post_quant_conv)", r"\1", "conv"),
    (_RES + r"\.resnets\.(\d+)\.(norm1|norm2)", r"\1.resnets.\2.\3", "norm"),
    (_RES + r"\.resnets\.(\d+)\.(conv1|conv2)", r"\1.resnets.\2.\3", "conv"),
    (_RES + r"\.resnets\.(\d+)\.conv_shortcut", r"\1.resnets.\2.shortcut", "conv"),
    (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", r"encoder.down_blocks.\1.resample",
     "conv"),
    (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", r"decoder.up_blocks.\1.resample", "conv"),
    (_ATTN + r"\.group_norm", r"\1.group_norm", "norm"),
    (_ATTN + r"\.(?:to_q|query)", r"\1.to_q", "linear"),
    (_ATTN + r"\.(?:to_k|key)", r"\1.to_k", "linear"),
    (_ATTN + r"\.(?:to_v|value)", r"\1.to_v", "linear"),
    (_ATTN + r"\.(?:to_out\.0|proj_attn)", r"\1.to_out", "linear"),
)

key_map = _make_key_map(RULES, "AutoencoderKL")
key_map.__doc__ = "AutoencoderKL torch name -> (jaxdiff path, kind); KeyError for unknown names."


def make_key_map(kwargs: dict | None = None):
    """The key map (the same for every AutoencoderKL config; the signature matches
    `unet_condition_keys.make_key_map`)."""
    del kwargs
    return key_map


__all__ = ["RULES", "Rule", "key_map", "make_key_map"]
