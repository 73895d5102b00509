"""The spatial transformer of Stable Diffusion's UNet (Rombach et al. 2022, section 3.3).

diffusers' `Transformer2DModel` for continuous input: GroupNorm (eps 1e-6) -> proj_in (1x1 conv,
or a linear layer with `use_linear_projection`) -> `BasicTransformerBlock`s over the H*W positions
(LayerNorm + self-attention, LayerNorm + cross-attention over the text states, LayerNorm + GEGLU
feed-forward, each residual) -> proj_out -> + input. Attribute names follow diffusers' module
names, so `jaxdiff.pretrained.unet_condition_keys` maps weights with a few rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.layers import Conv, Dense, GroupNorm, LayerNorm, multi_head_attention

TRANSFORMER_GROUP_NORM_EPS = 1e-6  # Transformer2DModel's GroupNorm, whatever the UNet's norm_eps
LAYER_NORM_EPS = 1e-5              # BasicTransformerBlock's norm_eps as the UNet builds it


class Attention(nnx.Module):
    """Multi-head attention of (B, L, query_dim) queries over (B, Lc, context_dim) keys/values
    (the queries themselves when no context is given): diffusers' `Attention` with `to_q`, `to_k`,
    `to_v` (bias when `qkv_bias`) and `to_out` (`to_out.0`, with bias)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, head_dim: int, *,
                 qkv_bias: bool, dtype: str, param_dtype: str, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = heads * head_dim
        kv_dim = query_dim if context_dim is None else context_dim
        self.to_q = Dense(query_dim, inner, use_bias=qkv_bias, **kw)
        self.to_k = Dense(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_v = Dense(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_out = Dense(inner, query_dim, **kw)
        self.heads = heads

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """x: (B, L, query_dim); context: (B, Lc, context_dim) or None -> (B, L, query_dim)."""
        source = x if context is None else context
        o = multi_head_attention(self.to_q(x), self.to_k(source), self.to_v(source), self.heads)
        return self.to_out(o)


class FeedForward(nnx.Module):
    """GEGLU feed-forward (Shazeer 2020): `proj` to 2 * 4 * dim, value * GELU(gate) (exact erf
    GELU, value the first half), `out` back to dim. diffusers' `FeedForward(dim, "geglu")`."""

    def __init__(self, dim: int, *, dtype: str, param_dtype: str, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = 4 * dim
        self.proj = Dense(dim, 2 * inner, **kw)
        self.out = Dense(inner, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.proj(x), 2, axis=-1)
        return self.out(value * jax.nn.gelu(gate, approximate=False))


class BasicTransformerBlock(nnx.Module):
    """Pre-LayerNorm block: self-attention (cross-attention over the context instead when
    `only_cross_attention`), cross-attention over the context, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, *,
                 only_cross_attention: bool, dtype: str, param_dtype: str,
                 rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = LayerNorm(dim, eps=LAYER_NORM_EPS, **kw)
        self.attn1 = Attention(dim, context_dim if only_cross_attention else None, heads,
                               head_dim, qkv_bias=False, **kw)
        self.norm2 = LayerNorm(dim, eps=LAYER_NORM_EPS, **kw)
        self.attn2 = Attention(dim, context_dim, heads, head_dim, qkv_bias=False, **kw)
        self.norm3 = LayerNorm(dim, eps=LAYER_NORM_EPS, **kw)
        self.ff = FeedForward(dim, **kw)
        self.only_cross_attention = bool(only_cross_attention)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x: (B, L, dim); context: (B, Lc, context_dim) -> (B, L, dim)."""
        x = x + self.attn1(self.norm1(x), context if self.only_cross_attention else None)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nnx.Module):
    """GroupNorm -> proj_in -> transformer blocks over H*W -> proj_out, plus the input.

    Args:
      channels: input (and output) channels; the inner width is heads * (channels // heads).
      heads: attention heads (diffusers' per-block `attention_head_dim` in SD configs).
      context_dim: width of the conditioning states (`cross_attention_dim`).
      num_groups: GroupNorm groups (`norm_num_groups`).
      num_layers: transformer blocks (`transformer_layers_per_block`).
      use_linear_projection: proj_in / proj_out are linear layers (SD 2) instead of 1x1 convs (SD 1).
      only_cross_attention: the first attention also reads the context.
    """

    def __init__(self, channels: int, heads: int, context_dim: int, *, num_groups: int,
                 num_layers: int = 1, use_linear_projection: bool = False,
                 only_cross_attention: bool = False, dtype: str = "float32",
                 param_dtype: str = "float32", rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        head_dim = channels // heads
        inner = heads * head_dim
        self.norm = GroupNorm(channels, num_groups, eps=TRANSFORMER_GROUP_NORM_EPS, **kw)
        if use_linear_projection:
            self.proj_in = Dense(channels, inner, **kw)
            self.proj_out = Dense(inner, channels, **kw)
        else:
            self.proj_in = Conv(channels, inner, 1, **kw)
            self.proj_out = Conv(inner, channels, 1, **kw)
        self.transformer_blocks = nnx.List([
            BasicTransformerBlock(inner, heads, head_dim, context_dim,
                                  only_cross_attention=only_cross_attention, **kw)
            for _ in range(num_layers)])
        self.use_linear_projection = bool(use_linear_projection)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x: (B, H, W, channels); context: (B, Lc, context_dim) -> (B, H, W, channels)."""
        b, hh, ww, _ = x.shape
        h = self.norm(x)
        # NHWC: a 1x1 conv and a linear layer on the channels act alike, before or after the
        # flattening; only their parameter shapes differ.
        h = self.proj_in(h)
        h = h.reshape(b, hh * ww, h.shape[-1])
        for block in self.transformer_blocks:
            h = block(h, context)
        h = self.proj_out(h.reshape(b, hh, ww, h.shape[-1]))
        return x.astype(h.dtype) + h
