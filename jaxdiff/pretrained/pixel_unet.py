"""diffusers `UNet2DModel` configs <-> jaxdiff's pixel UNet (`jaxdiff.models.UNet`).

The pixel DDPM checkpoints (e.g. the CIFAR-10 and CelebA-HQ ones of Ho et al. 2020, converted to
diffusers) are UNet2DModels of exactly the topology jaxdiff's UNet builds: ResBlocks with the
"default" time-embedding shift, self-attention at chosen levels and always in the mid block,
stride-2 conv downsampling and nearest + conv upsampling. Configs that differ in anything the
UNet cannot express (Fourier time embeddings, a scale-shift norm, ResNet resampling, a head count
that changes from level to level, ...) are refused with an InputError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxdiff.validation import InputError

DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}


def _fail(key: str, value, accepted: str):
    raise InputError(f"UNet2DModel config: {key}={value!r} is not supported; {accepted}")


def _int(config, key, default, minimum=1):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"expected an integer >= {minimum}")
    return value


def _require(config, key, default, accepted: tuple, why: str = ""):
    value = config.get(key, default)
    if value not in accepted:
        _fail(key, value, f"jaxdiff's UNet supports {' or '.join(map(repr, accepted))}{why}")
    return value


def _heads(config, channels, has_attn) -> int:
    """The one head count of every attention block (jaxdiff's UNet has a single `num_heads`)."""
    head_dim = config.get("attention_head_dim", 8)
    attn_channels = sorted({channels[-1]} | {c for c, a in zip(channels, has_attn) if a})
    if head_dim is None:  # diffusers then uses the block's channels as the head size
        return 1
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        _fail("attention_head_dim", head_dim, "expected a positive integer or null")
    heads = {c // head_dim for c in attn_channels}
    if any(c % head_dim for c in attn_channels) or len(heads) != 1:
        _fail("attention_head_dim", head_dim,
              f"jaxdiff's UNet uses one head count for every attention block, but head size "
              f"{head_dim} gives {sorted(heads)} heads for the attention channels "
              f"{attn_channels} (null, one head per block, always fits)")
    return heads.pop()


_USED = ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
         "down_block_types", "up_block_types", "mid_block_type", "attention_head_dim",
         "norm_num_groups", "attn_norm_num_groups", "norm_eps", "dropout", "flip_sin_to_cos",
         "freq_shift", "downsample_padding", "downsample_type", "upsample_type", "act_fn",
         "center_input_sample", "time_embedding_type", "time_embedding_dim",
         "resnet_time_scale_shift", "mid_block_scale_factor", "add_attention", "class_embed_type",
         "num_class_embeds", "num_train_timesteps")


def unet_kwargs_from_config(config: Mapping) -> dict[str, Any]:
    """A diffusers `unet/config.json` dict of a UNet2DModel -> `jaxdiff.models.UNet` kwargs.

    Keys starting with "_" (`_class_name`, `_diffusers_version`) are ignored; every other key is
    used, or checked to have a value that the UNet builds, or refused (InputError naming it).
    `num_class_embeds = n` gives `num_classes = n - 1`: the table's n rows load unchanged, and
    jaxdiff's "null label" (for guidance) is then simply the last row.

    Example:
      >>> cifar10 = {"_class_name": "UNet2DModel", "block_out_channels": [128, 256, 256, 256],
      ...   "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      ...   "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
      ...   "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False,
      ...   "freq_shift": 1, "norm_eps": 1e-06, "sample_size": 32}
      >>> kw = unet_kwargs_from_config(cifar10)
      >>> kw["base_channels"], kw["channel_mults"], kw["attention_resolutions"], kw["num_heads"]
      (128, (1, 2, 2, 2), (16,), 1)
    """
    if not isinstance(config, Mapping):
        raise InputError(f"a UNet2DModel config must be a dict (config.json); got "
                         f"{type(config).__name__}")
    unknown = sorted(k for k in config if k not in _USED and not str(k).startswith("_"))
    if unknown:
        raise InputError(f"UNet2DModel config: unknown key(s) {unknown}; jaxdiff reads "
                         f"{sorted(_USED)} (diffusers 0.42's UNet2DModel arguments)")
    channels = config.get("block_out_channels", (224, 448, 672, 896))
    if not isinstance(channels, (list, tuple)) or not channels or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        _fail("block_out_channels", channels, "expected a list of positive integers")
    base = channels[0]
    if any(c % base for c in channels):
        _fail("block_out_channels", channels, f"jaxdiff's UNet needs every level's channels to "
                                              f"be a multiple of the first ({base})")
    down = list(config.get("down_block_types", ("DownBlock2D",) + ("AttnDownBlock2D",) * 3))
    up = list(config.get("up_block_types", ("AttnUpBlock2D",) * 3 + ("UpBlock2D",)))
    for key, types, allowed in (("down_block_types", down, DOWN_TYPES),
                                ("up_block_types", up, UP_TYPES)):
        if len(types) != len(channels) or any(t not in allowed for t in types):
            _fail(key, types, f"expected {len(channels)} entries (one per block_out_channels) "
                              f"from {sorted(allowed)}")
    has_attn = [DOWN_TYPES[t] for t in down]
    if [UP_TYPES[t] for t in reversed(up)] != has_attn:
        _fail("up_block_types", up, f"jaxdiff's UNet has attention on the way up exactly at the "
                                    f"levels of down_block_types {down} (mirrored)")
    size = config.get("sample_size", 32)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = size[0]  # attention levels are chosen by level, so only the height is needed
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        _fail("sample_size", config.get("sample_size"), "expected a positive integer or [h, w]")
    factor = 2 ** (len(channels) - 1)
    if size % factor:
        _fail("sample_size", size, f"expected a multiple of {factor} for {len(channels)} levels")
    groups = _int(config, "norm_num_groups", 32)
    attn_groups = config.get("attn_norm_num_groups")
    if attn_groups not in (None, groups):
        _fail("attn_norm_num_groups", attn_groups, f"jaxdiff's UNet uses norm_num_groups "
                                                   f"({groups}) in its attention blocks too")
    c0 = base
    _require(config, "time_embedding_dim", None, (None, 4 * c0),
             " (the embedding is 4 x block_out_channels[0] wide)")
    _require(config, "mid_block_type", "UNetMidBlock2D", ("UNetMidBlock2D",))
    _require(config, "add_attention", True, (True,), " (the mid block always has attention)")
    _require(config, "act_fn", "silu", ("silu",))
    _require(config, "center_input_sample", False, (False,))
    _require(config, "time_embedding_type", "positional", ("positional",))
    _require(config, "resnet_time_scale_shift", "default", ("default",))
    _require(config, "mid_block_scale_factor", 1, (1,))
    _require(config, "downsample_type", "conv", ("conv",))
    _require(config, "upsample_type", "conv", ("conv",))
    _require(config, "class_embed_type", None, (None,),
             " (with num_class_embeds for class labels)")
    num_train = config.get("num_train_timesteps")  # read only by learned time embeddings
    if num_train is not None:
        _int(config, "num_train_timesteps", None)
    class_embeds = config.get("num_class_embeds")
    if class_embeds is not None:
        class_embeds = _int(config, "num_class_embeds", None, 2)
    eps = config.get("norm_eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        _fail("norm_eps", eps, "expected a small positive number")
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        _fail("dropout", dropout, "expected a rate in [0, 1)")
    flip = config.get("flip_sin_to_cos", True)
    if not isinstance(flip, bool):
        _fail("flip_sin_to_cos", flip, "expected true or false")
    freq_shift = _int(config, "freq_shift", 0, 0)
    if freq_shift >= c0 // 2:
        _fail("freq_shift", freq_shift, f"expected less than block_out_channels[0] // 2 = "
                                        f"{c0 // 2}")
    padding = _require(config, "downsample_padding", 1, (0, 1))
    sizes = [size // 2 ** i for i in range(len(channels))]
    return {
        "image_size": size, "in_channels": _int(config, "in_channels", 3),
        "out_channels": _int(config, "out_channels", 3), "base_channels": base,
        "channel_mults": tuple(c // base for c in channels),
        "num_res_blocks": _int(config, "layers_per_block", 2),
        "attention_resolutions": tuple(s for s, a in zip(sizes, has_attn) if a),
        "num_heads": _heads(config, channels, has_attn), "dropout": float(dropout),
        "num_groups": groups, "num_classes": class_embeds - 1 if class_embeds else 0,
        "dtype": "float32", "param_dtype": "float32", "remat": False, "flip_sin_to_cos": flip,
        "freq_shift": freq_shift,
        "norm_eps": float(eps), "downsample_padding": padding}


def config_from_unet_kwargs(model_kwargs: Mapping) -> dict[str, Any]:
    """The diffusers UNet2DModel config (without `_class_name`) that builds the same network as
    `jaxdiff.models.UNet(**model_kwargs)`: the same parameters and the same outputs.

    Raises InputError for a UNet that diffusers cannot express: several heads over attention
    blocks of different widths (diffusers fixes the head *size*, jaxdiff the head count).
    """
    import inspect

    from jaxdiff.models import diffusers_equivalent_kwargs
    from jaxdiff.models.unet import UNet

    allowed = set(inspect.signature(UNet.__init__).parameters) - {"self", "rngs"}
    kwargs = diffusers_equivalent_kwargs(**{k: v for k, v in dict(model_kwargs).items()
                                            if k in allowed})
    channels = kwargs["block_out_channels"]
    has_attn = [t == "AttnDownBlock2D" for t in kwargs["down_block_types"]]
    attn_channels = sorted({channels[-1]} | {c for c, a in zip(channels, has_attn) if a})
    heads = int(dict(model_kwargs).get("num_heads", 4))
    if heads == 1:
        head_dim = None
    elif len(attn_channels) == 1:
        head_dim = attn_channels[0] // heads
    else:
        raise InputError(f"cannot express this UNet in diffusers: its {heads} attention heads "
                         f"span blocks of {attn_channels} channels, so the head size differs "
                         f"between blocks, and diffusers' UNet2DModel has one head size "
                         f"(attention_head_dim). Models with num_heads=1 or attention at one "
                         f"width only can be exported.")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    config["attention_head_dim"] = head_dim
    return config


def abstract_unet(kwargs: Mapping) -> tuple[Any, dict[str, Any]]:
    """(graphdef, params as jax.ShapeDtypeStruct) of `UNet(**kwargs)`, allocating no weights: the
    loader's target. The graphdef runs with `jaxdiff.models.apply_model`."""
    from flax import nnx

    from jaxdiff.models.functional import split_params
    from jaxdiff.models.unet import UNet

    model = nnx.eval_shape(lambda: UNet(**kwargs, rngs=nnx.Rngs(0)))
    return split_params(model)
