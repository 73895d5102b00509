"""The KL autoencoder of latent diffusion (Rombach et al. 2022, section 3.1; appendix G), with the
topology of diffusers' AutoencoderKL.

Encoder: conv_in -> per level `layers_per_block` ResBlocks (no time embedding, GroupNorm eps 1e-6)
and, except at the last level, a stride-2 3x3 conv after padding right and bottom by one ->
mid block ResBlock-attention-ResBlock (one head over all positions) -> GroupNorm-SiLU-conv_out to
2 * latent_channels (mean and log-variance) -> quant_conv (1x1). Decoder: post_quant_conv (1x1)
-> conv_in -> mid block -> per level, deepest first, `layers_per_block + 1` ResBlocks and, except
at the top level, nearest 2x upsampling + conv -> GroupNorm-SiLU-conv_out.
Latents for the diffusion model are (z - shift_factor) * scaling_factor (shift 0 when absent).
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
    multi_head_attention,
    upsample_nearest,
)
from jaxdiff.validation import InputError, check_images

VAE_EPS = 1e-6  # every GroupNorm of diffusers' Encoder and Decoder
LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution clamps the log-variance to this


class SpatialAttention(nnx.Module):
    """Residual single-head self-attention over the H*W positions: group_norm, to_q, to_k, to_v,
    to_out (all with bias), as diffusers' `Attention(..., residual_connection=True)` of the VAE's
    mid block."""

    def __init__(self, channels: int, num_groups: int, **kw):
        self.group_norm = GroupNorm(channels, num_groups, eps=VAE_EPS, **kw)
        self.to_q = Dense(channels, channels, **kw)
        self.to_k = Dense(channels, channels, **kw)
        self.to_v = Dense(channels, channels, **kw)
        self.to_out = Dense(channels, channels, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        h = self.group_norm(x).reshape(b, hh * ww, c)
        o = multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), 1)
        return x.astype(o.dtype) + self.to_out(o).reshape(b, hh, ww, c)


class MidBlock(nnx.Module):
    """ResBlock -> attention (when `add_attention`) -> ResBlock."""

    def __init__(self, channels: int, num_groups: int, add_attention: bool, **kw):
        res_kw = dict(num_groups=num_groups, dropout=0.0, eps=VAE_EPS, **kw)
        self.resnets = nnx.List([ResBlock(channels, channels, None, **res_kw) for _ in range(2)])
        self.attentions = nnx.List([SpatialAttention(channels, num_groups, **kw)]
                                   if add_attention else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.resnets[0](x, None)
        if len(self.attentions):
            h = self.attentions[0](h)
        return self.resnets[1](h, None)


class Level(nnx.Module):
    """ResBlocks (`resnets`) and the resampling conv (`downsample` / `upsample` in diffusers'
    `downsamplers.0.conv` / `upsamplers.0.conv`; None at the last level)."""

    def __init__(self, resnets: list, resample: Conv | None):
        self.resnets = nnx.List(resnets)
        self.resample = resample


class Encoder(nnx.Module):
    """(B, H, W, in_channels) images -> (B, H/f, W/f, 2 * latent_channels) moments."""

    def __init__(self, in_channels: int, latent_channels: int, channels: tuple[int, ...],
                 layers_per_block: int, num_groups: int, add_attention: bool, **kw):
        res_kw = dict(num_groups=num_groups, dropout=0.0, eps=VAE_EPS, **kw)
        self.conv_in = Conv(in_channels, channels[0], 3, **kw)
        levels, ch = [], channels[0]
        for i, c in enumerate(channels):
            resnets = []
            for _ in range(layers_per_block):
                resnets.append(ResBlock(ch, c, None, **res_kw))
                ch = c
            last = i == len(channels) - 1
            down = None if last else Conv(c, c, 3, stride=2, padding=((0, 1), (0, 1)), **kw)
            levels.append(Level(resnets, down))
        self.down_blocks = nnx.List(levels)
        self.mid_block = MidBlock(ch, num_groups, add_attention, **kw)
        self.conv_norm_out = GroupNorm(ch, num_groups, eps=VAE_EPS, **kw)
        self.conv_out = Conv(ch, 2 * latent_channels, 3, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        for level in self.down_blocks:
            for resnet in level.resnets:
                h = resnet(h, None)
            if level.resample is not None:
                h = level.resample(h)
        h = self.mid_block(h)
        return self.conv_out(self.conv_norm_out(h, silu=True))


class Decoder(nnx.Module):
    """(B, h, w, latent_channels) latents -> (B, h*f, w*f, out_channels) images."""

    def __init__(self, latent_channels: int, out_channels: int, channels: tuple[int, ...],
                 layers_per_block: int, num_groups: int, add_attention: bool, **kw):
        res_kw = dict(num_groups=num_groups, dropout=0.0, eps=VAE_EPS, **kw)
        ch = channels[-1]
        self.conv_in = Conv(latent_channels, ch, 3, **kw)
        self.mid_block = MidBlock(ch, num_groups, add_attention, **kw)
        levels = []
        for i in reversed(range(len(channels))):
            c = channels[i]
            resnets = []
            for _ in range(layers_per_block + 1):
                resnets.append(ResBlock(ch, c, None, **res_kw))
                ch = c
            levels.append(Level(resnets, Conv(c, c, 3, **kw) if i > 0 else None))
        self.up_blocks = nnx.List(levels)
        self.conv_norm_out = GroupNorm(ch, num_groups, eps=VAE_EPS, **kw)
        self.conv_out = Conv(ch, out_channels, 3, **kw)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            for resnet in level.resnets:
                h = resnet(h, None)
            if level.resample is not None:
                h = level.resample(upsample_nearest(h))
        return self.conv_out(self.conv_norm_out(h, silu=True))


class AutoencoderKL(nnx.Module):
    """`encode(x) -> (mean, logvar)`, `decode(z) -> x`; NHWC, float32 results.

    Args (keyword-only; `autoencoder_kwargs_from_config` makes them from a diffusers config):
      in_channels / out_channels: image channels.
      block_out_channels: channels of each level (the downsampling factor is 2**(levels-1)).
      layers_per_block: ResBlocks per encoder level (decoder levels have one more).
      latent_channels: channels of the latent.
      norm_num_groups: GroupNorm groups.
      scaling_factor / shift_factor: latent normalisation (shift None where the config has none).
      use_quant_conv / use_post_quant_conv: the 1x1 convs around the latent.
      mid_block_add_attention: the mid blocks have their attention layer.
      dtype / param_dtype: compute and parameter dtype names.
      rngs: None builds zero kernels (fill them with `jaxdiff.models.unet.initialise_kernels`).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3,
                 block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2,
                 latent_channels: int = 4, norm_num_groups: int = 32,
                 scaling_factor: float = 0.18215, shift_factor: float | None = None,
                 use_quant_conv: bool = True, use_post_quant_conv: bool = True,
                 mid_block_add_attention: bool = True, dtype: str = "float32",
                 param_dtype: str = "float32", rngs: nnx.Rngs | None = None):
        check_dtypes(dtype, param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        channels = tuple(block_out_channels)
        arch = dict(channels=channels, layers_per_block=layers_per_block,
                    num_groups=norm_num_groups, add_attention=mid_block_add_attention, **kw)
        self.encoder = Encoder(in_channels, latent_channels, **arch)
        self.decoder = Decoder(latent_channels, out_channels, **arch)
        self.quant_conv = (Conv(2 * latent_channels, 2 * latent_channels, 1, **kw)
                           if use_quant_conv else None)
        self.post_quant_conv = (Conv(latent_channels, latent_channels, 1, **kw)
                                if use_post_quant_conv else None)
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = None if shift_factor is None else float(shift_factor)
        self.downsampling_factor = 2 ** (len(channels) - 1)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: (B, H, W, in_channels) images in [-1, 1], H and W multiples of the downsampling
        factor -> mean, logvar: (B, H/f, W/f, latent_channels) float32 (logvar clipped to
        [-30, 20] as diffusers' DiagonalGaussianDistribution)."""
        check_images(x, "x")
        f = self.downsampling_factor
        _, h, w, c = x.shape
        if c != self.in_channels or h % f or w % f or not h or not w:
            raise InputError(f"x must be NHWC images with {self.in_channels} channels and height "
                             f"and width positive multiples of {f}; got shape {tuple(x.shape)}")
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """z: (B, h, w, latent_channels) unscaled latents -> (B, h*f, w*f, out_channels) float32."""
        check_images(z, "z")
        if z.shape[-1] != self.latent_channels:
            raise InputError(f"z must be NHWC latents with {self.latent_channels} channels; got "
                             f"shape {tuple(z.shape)}")
        z = z.astype(DTYPES[self.decoder.conv_in.dtype])
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)


def sample_posterior(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """A draw z = mean + exp(logvar / 2) * N(0, I) of the diagonal Gaussian posterior."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def abstract_autoencoder(kwargs: dict) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """(graphdef, params as jax.ShapeDtypeStruct), allocating no weight (the loader's target)."""
    model = nnx.eval_shape(lambda: AutoencoderKL(**kwargs, rngs=None))
    return split_params(model)


def init_autoencoder(kwargs: dict, key: jax.Array) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """Builds `AutoencoderKL(**kwargs)` with LeCun-normal kernels drawn from `key`."""
    from jaxdiff.models.unet import initialise_kernels

    model = AutoencoderKL(**kwargs, rngs=None)
    initialise_kernels(model, key)
    return split_params(model)


def merge_autoencoder(graphdef: nnx.GraphDef, params: dict[str, Any]) -> AutoencoderKL:
    return merge_params(graphdef, params)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def encode(graphdef: nnx.GraphDef, params: dict[str, Any], x: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
    """Functional `AutoencoderKL.encode`: (mean, logvar) of images x (B, H, W, C)."""
    return merge_autoencoder(graphdef, params).encode(x)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def decode(graphdef: nnx.GraphDef, params: dict[str, Any], z: jax.Array) -> jax.Array:
    """Functional `AutoencoderKL.decode`: images (B, H, W, C) from unscaled latents z."""
    return merge_autoencoder(graphdef, params).decode(z)
