"""diffusers `config.json` dicts -> constructor kwargs of jaxdiff's UNet2DCondition and
AutoencoderKL.

Every key is either used, accepted because it changes nothing in float32 inference (e.g.
`upcast_attention`, `sample_size`), or refused with an InputError that names it and says what is
supported; keys that only describe the torch side (`_class_name`, `_diffusers_version`, any other
key starting with "_") are ignored. Where a config differs from diffusers' default only in a
value jaxdiff does not build (SDXL's addition embeddings, class embeddings, dual cross-attention),
the message says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxdiff.models.unet_condition import DOWN_BLOCK_TYPES, UP_BLOCK_TYPES
from jaxdiff.validation import InputError

_MISSING = object()


class _Reader:
    """Reads a config dict key by key and remembers which keys were read."""

    def __init__(self, config: Mapping, what: str):
        if not isinstance(config, Mapping):
            raise InputError(f"{what} config must be a dict (config.json); got "
                             f"{type(config).__name__}")
        self.config, self.what, self.seen = dict(config), what, set()

    def get(self, key, default):
        self.seen.add(key)
        return self.config.get(key, default)

    def fail(self, key, value, accepted: str):
        raise InputError(f"{self.what} config: {key}={value!r} is not supported; {accepted}")

    def int(self, key, default, minimum=1):
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, value, f"expected an integer >= {minimum}")
        return value

    def number(self, key, default):
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, value, "expected a number")
        return float(value)

    def bool(self, key, default):
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, value, "expected true or false")
        return value

    def require(self, key, default, accepted: tuple, why: str = ""):
        """The value must be one of `accepted` (the default when absent)."""
        value = self.get(key, default)
        if value not in accepted:
            self.fail(key, value, f"jaxdiff supports {' or '.join(map(repr, accepted))}{why}")
        return value

    def ints(self, key, default, length=None):
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or not value or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            self.fail(key, value, "expected a list of positive integers")
        if length is not None and len(value) != length:
            self.fail(key, value, f"expected {length} entries, one per block")
        return tuple(value)

    def int_or_ints(self, key, default, length):
        value = self.get(key, default)
        if isinstance(value, (list, tuple)):
            return self.ints(key, default, length)
        return (self.int(key, default),) * length

    def finish(self):
        unknown = sorted(k for k in self.config if k not in self.seen and not k.startswith("_"))
        if unknown:
            raise InputError(f"{self.what} config has unknown key(s) {unknown}; jaxdiff reads "
                             f"{sorted(self.seen)}")


_SDXL = ("; this is an SDXL-style (or other) conditioning that jaxdiff does not build: only SD 1.x "
         "and 2.x UNets are supported")


def unet_condition_kwargs_from_config(config: Mapping) -> dict:
    """A diffusers UNet2DConditionModel config (unet/config.json) -> `UNet2DCondition` kwargs.

    `attention_head_dim` is the number of heads in these configs (diffusers' naming mistake,
    kept for compatibility); `num_attention_heads`, when given, takes precedence over it.

    Raises:
      InputError naming an unknown key or an unsupported value.
    """
    r = _Reader(config, "UNet2DConditionModel")
    down = r.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))
    up = r.get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    for key, types, accepted in (("down_block_types", down, DOWN_BLOCK_TYPES),
                                 ("up_block_types", up, UP_BLOCK_TYPES)):
        if not isinstance(types, (list, tuple)) or not types or any(t not in accepted
                                                                   for t in types):
            r.fail(key, types, f"expected a list of {' / '.join(accepted)}")
    n = len(down)
    channels = r.ints("block_out_channels", (320, 640, 1280, 1280), n)
    if len(up) != n or [t.startswith("CrossAttn") for t in up] != [
            t.startswith("CrossAttn") for t in reversed(down)]:
        r.fail("up_block_types", up, f"expected the mirror of down_block_types {list(down)}")
    heads = r.get("num_attention_heads", None)
    key = "num_attention_heads"
    if heads is None:
        key = "attention_head_dim"
        r.get(key, None)
    else:
        r.get("attention_head_dim", None)  # superseded, as in diffusers
    heads = r.int_or_ints(key, 8, n)
    groups = r.int("norm_num_groups", 32)
    for i, (c, h) in enumerate(zip(channels, heads)):
        if c % h or c % groups:
            r.fail(key, heads, f"the heads ({h}) and norm_num_groups ({groups}) must divide "
                   f"block_out_channels[{i}] = {c}")
    cross_dim = r.get("cross_attention_dim", 1280)
    if isinstance(cross_dim, (list, tuple)) and len(set(cross_dim)) == 1:
        cross_dim = cross_dim[0]
    if isinstance(cross_dim, bool) or not isinstance(cross_dim, int) or cross_dim < 1:
        r.fail("cross_attention_dim", cross_dim, "expected one positive integer")
    t_layers = r.get("transformer_layers_per_block", 1)
    if isinstance(t_layers, (list, tuple)):
        t_layers = r.ints("transformer_layers_per_block", 1, n)
    else:
        t_layers = (r.int("transformer_layers_per_block", 1),) * n
    only_cross = r.get("only_cross_attention", False)
    if isinstance(only_cross, bool):
        only_cross = (only_cross,) * n
    elif not (isinstance(only_cross, (list, tuple)) and len(only_cross) == n
              and all(isinstance(v, bool) for v in only_cross)):
        r.fail("only_cross_attention", only_cross, f"expected true/false or {n} of them")
    r.get("mid_block_only_cross_attention", None)  # UNetMidBlock2DCrossAttn ignores it
    r.get("sample_size", None)
    r.get("upcast_attention", False)  # float32 attention logits are what it asks for
    r.get("dropout", 0.0)  # inference: no dropout
    r.get("addition_embed_type_num_heads", 64)  # only read with an addition embedding
    pad = r.int("downsample_padding", 1, minimum=0)
    kernels = {}
    for k in ("conv_in_kernel", "conv_out_kernel"):
        kernels[k] = r.int(k, 3)
        if kernels[k] % 2 == 0:
            r.fail(k, kernels[k], "expected an odd kernel size")
    time_dim = r.get("time_embedding_dim", None)
    if time_dim is not None:
        time_dim = r.int("time_embedding_dim", None)
    r.require("mid_block_type", "UNetMidBlock2DCrossAttn", ("UNetMidBlock2DCrossAttn",))
    r.require("act_fn", "silu", ("silu", "swish"))
    r.require("time_embedding_type", "positional", ("positional",))
    r.require("resnet_time_scale_shift", "default", ("default",))
    r.require("attention_type", "default", ("default",))
    for k in ("mid_block_scale_factor", "resnet_out_scale_factor"):
        r.require(k, 1.0, (1, 1.0))
    for k in ("dual_cross_attention", "resnet_skip_time_act", "class_embeddings_concat"):
        r.require(k, False, (False,))
    for k in ("class_embed_type", "num_class_embeds", "addition_embed_type",
              "addition_time_embed_dim", "projection_class_embeddings_input_dim",
              "encoder_hid_dim", "encoder_hid_dim_type"):
        r.require(k, None, (None,), _SDXL)
    for k in ("time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim",
              "cross_attention_norm", "reverse_transformer_layers_per_block"):
        r.require(k, None, (None,))
    kwargs = dict(
        in_channels=r.int("in_channels", 4), out_channels=r.int("out_channels", 4),
        block_out_channels=channels, down_block_types=tuple(down), up_block_types=tuple(up),
        layers_per_block=r.int_or_ints("layers_per_block", 2, n), heads=heads,
        cross_attention_dim=cross_dim, transformer_layers_per_block=t_layers,
        use_linear_projection=r.bool("use_linear_projection", False),
        only_cross_attention=tuple(only_cross),
        flip_sin_to_cos=r.bool("flip_sin_to_cos", True),
        freq_shift=r.number("freq_shift", 0), norm_num_groups=groups,
        norm_eps=r.number("norm_eps", 1e-5),
        center_input_sample=r.bool("center_input_sample", False), downsample_padding=pad,
        time_embedding_dim=time_dim, **kernels)
    r.finish()
    return kwargs


def autoencoder_kwargs_from_config(config: Mapping) -> dict:
    """A diffusers AutoencoderKL config (vae/config.json) -> `AutoencoderKL` kwargs.

    Raises:
      InputError naming an unknown key or an unsupported value.
    """
    r = _Reader(config, "AutoencoderKL")
    down = r.get("down_block_types", ("DownEncoderBlock2D",))
    up = r.get("up_block_types", ("UpDecoderBlock2D",))
    channels = r.ints("block_out_channels", (64,))
    for key, types, accepted in (("down_block_types", down, "DownEncoderBlock2D"),
                                 ("up_block_types", up, "UpDecoderBlock2D")):
        if (not isinstance(types, (list, tuple)) or len(types) != len(channels)
                or any(t != accepted for t in types)):
            r.fail(key, types, f"expected {len(channels)} x {accepted!r} (one per "
                   f"block_out_channels entry)")
    groups = r.int("norm_num_groups", 32)
    if any(c % groups for c in channels):
        r.fail("norm_num_groups", groups, f"it must divide block_out_channels {list(channels)}")
    r.require("act_fn", "silu", ("silu", "swish"))
    shift = r.get("shift_factor", None)
    if shift is not None:
        shift = r.number("shift_factor", None)
    for k in ("sample_size", "force_upcast", "latents_mean", "latents_std"):
        r.get(k, None)  # tiling size, fp16 advice and SDXL-era statistics: no effect here
    kwargs = dict(
        in_channels=r.int("in_channels", 3), out_channels=r.int("out_channels", 3),
        block_out_channels=channels, layers_per_block=r.int("layers_per_block", 1),
        latent_channels=r.int("latent_channels", 4), norm_num_groups=groups,
        scaling_factor=r.number("scaling_factor", 0.18215), shift_factor=shift,
        use_quant_conv=r.bool("use_quant_conv", True),
        use_post_quant_conv=r.bool("use_post_quant_conv", True),
        mid_block_add_attention=r.bool("mid_block_add_attention", True))
    r.finish()
    return kwargs
