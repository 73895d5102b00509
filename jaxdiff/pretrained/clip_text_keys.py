"""transformers CLIPTextModel state-dict names -> jaxdiff `CLIPTextModel` parameter paths.

Both layouts load: checkpoints on disk (and `CLIPTextModelWithProjection`) carry a `text_model.`
prefix, a fresh `CLIPTextModel` saved by transformers >= 5.6 has none. The `position_ids` buffer
that older checkpoints store is dropped (positions are always 0..L-1 here).
"""

from __future__ import annotations

from jaxdiff.pretrained.key_rules import Rule
from jaxdiff.pretrained.key_rules import make_key_map as _make_key_map

_LAYER = r"encoder\.layers\.(\d+)"

RULES = (
    (_LAYER + r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)", r"encoder.layers.\1.self_attn.\2",
     "linear"),
    (_LAYER + r"\.mlp\.(fc1|fc2)", r"encoder.layers.\1.mlp.\2", "linear"),
    (_LAYER + r"\.(layer_norm1|layer_norm2)", r"encoder.layers.\1.\2", "norm"),
    (r"final_layer_norm", "final_layer_norm", "norm"),
    (r"text_projection", "text_projection", "linear"),
)

_rule_map = _make_key_map(RULES, "CLIPTextModel")
_EMBEDDINGS = ("embeddings.token_embedding.weight", "embeddings.position_embedding.weight")


def key_map(torch_name: str) -> Rule | None:
    """CLIPTextModel torch name -> (jaxdiff path, kind); None for the `position_ids` buffer;
    KeyError for unknown names."""
    name = torch_name.removeprefix("text_model.")
    if name == "embeddings.position_ids":
        return None
    if name in _EMBEDDINGS:
        return name.replace(".weight", ".embedding").replace(".", "/"), "copy"
    try:
        return _rule_map(name)
    except KeyError:
        raise KeyError(f"{torch_name!r} is not a parameter name of a transformers "
                       f"CLIPTextModel") from None


def make_key_map(kwargs: dict | None = None):
    """The key map (the same for every CLIPTextModel config; the signature matches
    `unet_condition_keys.make_key_map`)."""
    del kwargs
    return key_map


__all__ = ["RULES", "Rule", "key_map", "make_key_map"]
