"""Stable Diffusion's text-conditioned UNet with the topology of diffusers' UNet2DConditionModel.

conv_in -> down blocks (ResBlocks, each followed by a spatial transformer in CrossAttnDownBlock2D;
a stride-2 conv except at the last level) -> mid block ResBlock-transformer-ResBlock -> up blocks
(layers_per_block + 1 ResBlocks, each consuming one skip connection, transformers as on the way
down; nearest 2x upsampling + conv except at the last level) -> GroupNorm-SiLU-conv_out.
The timestep enters through a sinusoidal embedding of c0 = block_out_channels[0] dims and a
2-layer SiLU MLP to 4 * c0; the text states (B, tokens, cross_attention_dim) through the
cross-attention of every transformer block (Rombach et al. 2022).

The layers are the pixel UNet's (`jaxdiff.models.layers`): the same ResBlock, GroupNorm, Conv,
timestep embedding and attention kernels. Attribute names mirror diffusers' module names;
`jaxdiff.models.diffusers_config.unet_condition_kwargs_from_config` builds the constructor
arguments from a diffusers `unet/config.json`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> kw = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D",
  ...           "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  ...           heads=(2, 2), cross_attention_dim=16, norm_num_groups=8)
  >>> graphdef, params = init_unet_condition(kw, jax.random.key(0))
  >>> out = apply_unet_condition(graphdef, params, jnp.zeros((1, 8, 8, 4)), jnp.array([10]),
  ...                            jnp.zeros((1, 7, 16)))
  >>> out.shape
  (1, 8, 8, 4)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.functional import merge_params, split_params
from jaxdiff.models.layers import (
    DTYPES,
    Conv,
    Dense,
    GroupNorm,
    ResBlock,
    check_dtypes,
    silu_fast,
    timestep_embedding,
    upsample_nearest,
)
from jaxdiff.models.transformer import Transformer2D
from jaxdiff.validation import InputError, check_images

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


def check_unet_inputs(x, t, context, *, in_channels: int, factor: int,
                      cross_attention_dim: int) -> None:
    """Raises InputError unless x is (B, H, W, in_channels) float with H, W positive multiples of
    `factor`, t is a scalar or (B,), and context is (B, tokens, cross_attention_dim)."""
    check_images(x, "x")
    b, h, w, c = x.shape
    if c != in_channels or h % factor or w % factor or not h or not w:
        raise InputError(f"x must be NHWC latents with {in_channels} channels and height and "
                         f"width positive multiples of {factor}; got shape {tuple(x.shape)}")
    t_shape = getattr(t, "shape", ())
    if tuple(t_shape) not in ((), (b,)):
        raise InputError(f"t must have shape (batch,) = ({b},) or be a scalar; got shape "
                         f"{tuple(t_shape)}")
    c_shape = tuple(getattr(context, "shape", ()))
    if len(c_shape) != 3 or c_shape[0] != b or c_shape[2] != cross_attention_dim:
        raise InputError(f"context must have shape (batch, tokens, cross_attention_dim) = "
                         f"({b}, tokens, {cross_attention_dim}); got {c_shape}")


class TimestepEmbedding(nnx.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers' `TimestepEmbedding`)."""

    def __init__(self, in_dim: int, dim: int, **kw):
        self.linear_1 = Dense(in_dim, dim, **kw)
        self.linear_2 = Dense(dim, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(silu_fast(self.linear_1(x)))


class Block(nnx.Module):
    """One level of the UNet: ResBlocks (`resnets`), a transformer after each (`attentions`, empty
    for DownBlock2D / UpBlock2D) and the resampling conv (`downsample` or `upsample`, or None)."""

    def __init__(self, resnets: list, attentions: list, resample: Conv | None):
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.List(attentions)
        self.resample = resample


class UNet2DCondition(nnx.Module):
    """`model(x, t, context) -> (B, H, W, out_channels)` float32 noise (or v) prediction.

    Args (keyword-only; `unet_condition_kwargs_from_config` makes them from a diffusers config):
      in_channels / out_channels: latent channels (4 for SD).
      block_out_channels: channels of each level.
      down_block_types / up_block_types: per level, "CrossAttnDownBlock2D" or "DownBlock2D"
        (up: "CrossAttnUpBlock2D" or "UpBlock2D", deepest level first).
      layers_per_block: ResBlocks per down level (int or one per level; up levels have one more).
      heads: attention heads per level (diffusers' `attention_head_dim` in SD configs).
      cross_attention_dim: width of the text states.
      transformer_layers_per_block: transformer blocks per spatial transformer, per level.
      use_linear_projection: linear proj_in / proj_out (SD 2) instead of 1x1 convs (SD 1).
      only_cross_attention: per level, the first attention of each transformer block also reads
        the text states.
      flip_sin_to_cos / freq_shift: the timestep embedding's layout and frequency shift.
      norm_num_groups / norm_eps: GroupNorm groups and epsilon of the ResBlocks and the output.
      center_input_sample: the input is mapped x -> 2x - 1 first.
      downsample_padding: padding of the stride-2 convs (0 pads right and bottom by one).
      conv_in_kernel / conv_out_kernel: kernel sizes of the first and last conv.
      time_embedding_dim: width of the time embedding (None: 4 * block_out_channels[0]).
      dtype / param_dtype: compute and parameter dtype names; the output is float32.
      rngs: None builds zero kernels (fill them with `jaxdiff.models.unet.initialise_kernels`).
    """

    def __init__(self, *, in_channels: int = 4, out_channels: int = 4,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 layers_per_block=2, heads=8, cross_attention_dim: int = 768,
                 transformer_layers_per_block=1, use_linear_projection: bool = False,
                 only_cross_attention=False, flip_sin_to_cos: bool = True,
                 freq_shift: float = 0.0, norm_num_groups: int = 32, norm_eps: float = 1e-5,
                 center_input_sample: bool = False, downsample_padding: int = 1,
                 conv_in_kernel: int = 3, conv_out_kernel: int = 3,
                 time_embedding_dim: int | None = None, dtype: str = "float32",
                 param_dtype: str = "float32", rngs: nnx.Rngs | None = None):
        levels = len(block_out_channels)

        def per_level(v):
            return tuple(v) if isinstance(v, (list, tuple)) else (v,) * levels

        channels = tuple(block_out_channels)
        layers = per_level(layers_per_block)
        heads = per_level(heads)
        t_layers = per_level(transformer_layers_per_block)
        only_cross = per_level(only_cross_attention)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cross_attention_dim = cross_attention_dim
        self.flip_sin_to_cos, self.freq_shift = bool(flip_sin_to_cos), float(freq_shift)
        self.center_input_sample = bool(center_input_sample)
        self.num_levels = levels
        self.timestep_input_dim = block_out_channels[0]
        self.dtype = dtype
        check_dtypes(dtype, param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        c0 = channels[0]
        temb_dim = time_embedding_dim or 4 * c0
        res_kw = dict(num_groups=norm_num_groups, dropout=0.0, eps=norm_eps, **kw)

        def transformer(c, i, mid=False):
            # diffusers' UNetMidBlock2DCrossAttn never makes its attention cross-only
            return Transformer2D(c, heads[i], cross_attention_dim, num_groups=norm_num_groups,
                                 num_layers=t_layers[i],
                                 use_linear_projection=use_linear_projection,
                                 only_cross_attention=only_cross[i] and not mid, **kw)

        self.conv_in = Conv(in_channels, c0, conv_in_kernel, **kw)
        self.time_embedding = TimestepEmbedding(c0, temb_dim, **kw)

        pad = downsample_padding
        down_pad = ((0, 1), (0, 1)) if pad == 0 else ((pad, pad), (pad, pad))
        down, skip_channels, ch = [], [c0], c0
        for i, (c, kind) in enumerate(zip(channels, down_block_types)):
            resnets, attentions = [], []
            for _ in range(layers[i]):
                resnets.append(ResBlock(ch, c, temb_dim, **res_kw))
                ch = c
                if kind == "CrossAttnDownBlock2D":
                    attentions.append(transformer(c, i))
                skip_channels.append(c)
            last = i == levels - 1
            resample = None if last else Conv(c, c, 3, stride=2, padding=down_pad, **kw)
            if not last:
                skip_channels.append(c)
            down.append(Block(resnets, attentions, resample))
        self.down_blocks = nnx.List(down)

        self.mid_block = Block([ResBlock(ch, ch, temb_dim, **res_kw),
                                ResBlock(ch, ch, temb_dim, **res_kw)],
                               [transformer(ch, levels - 1, mid=True)], None)

        up = []
        for j, kind in enumerate(up_block_types):
            i = levels - 1 - j
            c = channels[i]
            resnets, attentions = [], []
            for _ in range(layers[i] + 1):
                resnets.append(ResBlock(ch + skip_channels.pop(), c, temb_dim, **res_kw))
                ch = c
                if kind == "CrossAttnUpBlock2D":
                    attentions.append(transformer(c, i))
            resample = Conv(c, c, 3, **kw) if i > 0 else None
            up.append(Block(resnets, attentions, resample))
        self.up_blocks = nnx.List(up)
        assert not skip_channels

        self.conv_norm_out = GroupNorm(c0, norm_num_groups, eps=norm_eps, **kw)
        self.conv_out = Conv(c0, out_channels, conv_out_kernel, **kw)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    def check_inputs(self, x, t, context) -> None:
        """Raises InputError for inputs of the wrong shape or dtype (runs on tracers too)."""
        check_unet_inputs(x, t, context, in_channels=self.in_channels,
                          factor=self.downsampling_factor,
                          cross_attention_dim=self.cross_attention_dim)

    def __call__(self, x: jax.Array, t, context: jax.Array) -> jax.Array:
        """Predicts the model output for noisy latents.

        Args:
          x: (B, H, W, in_channels) latents; H, W multiples of 2**(levels-1).
          t: (B,) int or float timesteps (a scalar is broadcast).
          context: (B, tokens, cross_attention_dim) text states.

        Returns:
          (B, H, W, out_channels) float32.
        """
        self.check_inputs(x, t, context)
        dt = DTYPES[self.dtype]
        b = x.shape[0]
        if self.center_input_sample:
            x = 2.0 * x - 1.0
        t = jnp.broadcast_to(jnp.asarray(t), (b,))
        emb = timestep_embedding(t, self.timestep_input_dim,
                                 flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        # every ResBlock applies SiLU to the embedding first: do it once here
        temb_act = silu_fast(self.time_embedding(emb))
        context = context.astype(dt)

        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                h = resnet(h, temb_act)
                if len(block.attentions):
                    h = block.attentions[j](h, context)
                skips.append(h)
            if block.resample is not None:
                h = block.resample(h)
                skips.append(h)
        mid = self.mid_block
        h = mid.resnets[1](mid.attentions[0](mid.resnets[0](h, temb_act), context), temb_act)
        for block in self.up_blocks:
            for j, resnet in enumerate(block.resnets):
                h = resnet(jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1), temb_act)
                if len(block.attentions):
                    h = block.attentions[j](h, context)
            if block.resample is not None:
                h = block.resample(upsample_nearest(h))
        h = self.conv_out(self.conv_norm_out(h, silu=True))
        return h.astype(jnp.float32)


def abstract_unet_condition(kwargs: dict) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """(graphdef, params as jax.ShapeDtypeStruct) without allocating any weight: the loader's
    target for `jaxdiff.pretrained.convert.convert_tensors`."""
    model = nnx.eval_shape(lambda: UNet2DCondition(**kwargs, rngs=None))
    return split_params(model)


def init_unet_condition(kwargs: dict, key: jax.Array) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """Builds `UNet2DCondition(**kwargs)` with LeCun-normal kernels (zero biases, unit norm
    scales) drawn from `key`; returns (graphdef, params) for `apply_unet_condition`."""
    from jaxdiff.models.unet import initialise_kernels

    model = UNet2DCondition(**kwargs, rngs=None)
    initialise_kernels(model, key)
    return split_params(model)


def merge_unet_condition(graphdef: nnx.GraphDef, params: dict[str, Any]) -> UNet2DCondition:
    """The module with `params` (string or int list keys) put back in."""
    return merge_params(graphdef, params)


def apply_unet_condition(graphdef: nnx.GraphDef, params: dict[str, Any], x: jax.Array, t,
                         context: jax.Array) -> jax.Array:
    """Runs the UNet (jitted when called eagerly; inlined inside an outer jit / scan).

    Args: graphdef, params from `init_unet_condition` or the loader; x (B, H, W, in_channels);
    t (B,) or scalar timesteps; context (B, tokens, cross_attention_dim).
    Returns: (B, H, W, out_channels) float32.
    """
    # the sizes to check, read from the parameter shapes (merging a full-size module per call
    # would cost ~0.1 s)
    block = _item(_item(_item(params["mid_block"], "attentions"), 0), "transformer_blocks")
    check_unet_inputs(x, t, context, in_channels=params["conv_in"]["kernel"].shape[-2],
                      factor=2 ** (len(params["down_blocks"]) - 1),
                      cross_attention_dim=_item(block, 0)["attn2"]["to_k"]["kernel"].shape[0])
    t = jnp.broadcast_to(jnp.asarray(t), x.shape[:1])
    return _apply_jit(graphdef, params, x, t, context)


def _item(tree, key):
    # params restored from a checkpoint have string list indices, nnx.State integer ones
    return tree[str(key)] if str(key) in tree else tree[key]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _apply_jit(graphdef, params, x, t, context):
    return merge_unet_condition(graphdef, params)(x, t, context)
