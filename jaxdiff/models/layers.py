"""Building blocks of the UNets and the autoencoder: convolution, dense, group and layer norm,
timestep embedding, ResBlock, attention.

Every layer keeps its parameters in `param_dtype` and computes in `dtype` (bfloat16 allowed);
group-norm statistics and the attention softmax are always computed in float32. Images are NHWC.
The layouts follow the DDPM UNet (Ho et al. 2020, appendix B) as diffusers' `UNet2DModel` builds it,
so both have exactly the same parameters (`jaxdiff.models.diffusers_equivalent_kwargs`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.models import winograd
from jaxdiff.validation import InputError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
GROUP_NORM_EPS = 1e-5  # diffusers' norm_eps default


def check_dtypes(dtype, param_dtype) -> None:
    """Raises InputError unless both are dtype names of DTYPES."""
    for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        if not isinstance(value, str) or value not in DTYPES:
            raise InputError(f"unknown {name} {value!r}; choose one of {sorted(DTYPES)}")



def _const(value: float, shape: tuple[int, ...], param_dtype: str) -> jax.Array:
    # built in numpy and transferred: eager jnp.zeros would compile a kernel per shape. Lazy
    # zeros and a broadcast view touch no memory, so building a model under jax.eval_shape
    # (e.g. to check a full-size Stable Diffusion config) allocates nothing.
    dtype = DTYPES[param_dtype]
    if value == 0:
        return jnp.asarray(np.zeros(shape, dtype))
    return jnp.asarray(np.broadcast_to(np.asarray(value, dtype), shape))


def _init_kernel(rngs: nnx.Rngs | None, shape: tuple[int, ...], param_dtype: str) -> jax.Array:
    """LeCun normal N(0, 1/fan_in) with fan_in = prod(shape[:-1]); zeros when `rngs` is None
    (the owner then draws all kernels at once, see `jaxdiff.models.unet.initialise_kernels`)."""
    if rngs is None:
        return _const(0.0, shape, param_dtype)
    std = 1.0 / math.sqrt(math.prod(shape[:-1]))
    return (std * jax.random.normal(rngs.params(), shape)).astype(DTYPES[param_dtype])


class Conv(nnx.Module):
    """k x k convolution, HWIO kernel: k*k*cin*cout + cout parameters.

    `padding` None is 'SAME' (k // 2 on every side); ((top, bottom), (left, right)) pads
    asymmetrically, e.g. ((0, 1), (0, 1)) for diffusers' `Downsample2D(padding=0)`.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, *, stride: int = 1,
                 padding: tuple[tuple[int, int], tuple[int, int]] | None = None,
                 dtype: str = "float32", param_dtype: str = "float32", rngs: nnx.Rngs | None):
        shape = (kernel_size, kernel_size, in_ch, out_ch)
        self.kernel = nnx.Param(_init_kernel(rngs, shape, param_dtype))
        self.bias = nnx.Param(_const(0.0, (out_ch,), param_dtype))
        self.stride = stride
        if padding is None:
            p = kernel_size // 2
            padding = ((p, p), (p, p))
        self.padding = tuple(tuple(int(v) for v in side) for side in padding)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = DTYPES[self.dtype]
        kernel = self.kernel[...]
        if kernel.ndim == 3:  # prepared for inference by winograd.prepare_params
            if winograd.use_fast_path(x.shape):
                return winograd.conv3x3(x.astype(dt), kernel) + self.bias[...].astype(dt)
            kernel = winograd.recover_kernel(kernel)
        y = jax.lax.conv_general_dilated(
            x.astype(dt), kernel.astype(dt), (self.stride, self.stride),
            self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(dt)


class Dense(nnx.Module):
    """y = x W + b: in*out + out parameters (in*out without bias when `use_bias=False`)."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 dtype: str = "float32", param_dtype: str = "float32", rngs: nnx.Rngs | None):
        self.kernel = nnx.Param(_init_kernel(rngs, (in_features, out_features), param_dtype))
        self.bias = nnx.Param(_const(0.0, (out_features,), param_dtype)) if use_bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = DTYPES[self.dtype]
        y = x.astype(dt) @ self.kernel[...].astype(dt)
        return y if self.bias is None else y + self.bias[...].astype(dt)


class GroupNorm(nnx.Module):
    """Group normalisation (Wu & He 2018) over (H, W, C/G) of NHWC input, optionally fused with SiLU.

    Statistics are one pass (E[x], E[x^2]) in float32; the normalisation and the affine map are folded
    into one per-(batch, channel) scale and shift, so XLA emits a single elementwise pass.
    2 * channels parameters.
    """

    def __init__(self, channels: int, num_groups: int, *, eps: float = GROUP_NORM_EPS,
                 dtype: str = "float32", param_dtype: str = "float32", rngs: nnx.Rngs | None):
        del rngs
        self.scale = nnx.Param(_const(1.0, (channels,), param_dtype))
        self.bias = nnx.Param(_const(0.0, (channels,), param_dtype))
        self.num_groups = num_groups
        self.eps = float(eps)
        self.dtype = dtype

    def __call__(self, x: jax.Array, *, silu: bool = False) -> jax.Array:
        dt = DTYPES[self.dtype]
        b, c = x.shape[0], x.shape[-1]
        g = self.num_groups
        xf = x.astype(jnp.float32).reshape(b, -1, c)
        # Two-stage sums (positions, then the channels of a group) run about 2x faster on XLA:CPU
        # than one reduction over the strided (positions, channels-in-group) axes.
        count = xf.shape[1] * (c // g)
        mean = jnp.sum(xf, axis=1).reshape(b, g, -1).sum(-1) / count                # (B, G)
        mean_sq = jnp.sum(jnp.square(xf), axis=1).reshape(b, g, -1).sum(-1) / count
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        inv = jax.lax.rsqrt(var + self.eps)
        inv_c = jnp.repeat(inv, c // g, axis=1)                            # (B, C)
        mean_c = jnp.repeat(mean, c // g, axis=1)
        mul = inv_c * self.scale[...].astype(jnp.float32)
        add = self.bias[...].astype(jnp.float32) - mean_c * mul
        y = (xf * mul[:, None, :] + add[:, None, :]).reshape(x.shape)
        if silu:
            y = silu_fast(y)
        return y.astype(dt)


def silu_fast(x: jax.Array) -> jax.Array:
    """SiLU x * sigmoid(x), with sigmoid(x) = (1 + tanh(x / 2)) / 2: the same function, but XLA:CPU
    evaluates tanh without the exp and division of `jax.nn.silu` (measured 2-4x faster)."""
    return x * (0.5 + 0.5 * jnp.tanh(0.5 * x))


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0, *,
                       flip_sin_to_cos: bool = True, freq_shift: float = 0.0) -> jax.Array:
    """Sinusoidal embedding (Vaswani et al. 2017) of (batch,) timesteps -> (batch, dim) float32.

    As diffusers' `Timesteps(dim, flip_sin_to_cos, downscale_freq_shift=freq_shift)`: frequencies
    exp(-log(max_period) * i / (dim // 2 - freq_shift)), i < dim // 2, output [cos, sin] (or
    [sin, cos] when `flip_sin_to_cos` is False), zero-padded if dim is odd.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                    / (half - freq_shift))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    parts = [jnp.cos(args), jnp.sin(args)]
    emb = jnp.concatenate(parts if flip_sin_to_cos else parts[::-1], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of NHWC input."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


class ResBlock(nnx.Module):
    """GN-SiLU-conv3x3, + Dense(SiLU(temb)), GN-SiLU-dropout-conv3x3, + (1x1 conv) shortcut.

    Ho et al. 2020 (appendix B); diffusers' `ResnetBlock2D` with time_embedding_norm="default".
    `temb_dim=None` leaves out the time embedding (the autoencoder's blocks).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, *, num_groups: int,
                 dropout: float, eps: float = GROUP_NORM_EPS, dtype: str, param_dtype: str,
                 rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = GroupNorm(in_ch, num_groups, eps=eps, **kw)
        self.conv1 = Conv(in_ch, out_ch, 3, **kw)
        self.temb_proj = Dense(temb_dim, out_ch, **kw) if temb_dim is not None else None
        self.norm2 = GroupNorm(out_ch, num_groups, eps=eps, **kw)
        self.conv2 = Conv(out_ch, out_ch, 3, **kw)
        self.shortcut = Conv(in_ch, out_ch, 1, **kw) if in_ch != out_ch else None
        self.dropout = float(dropout)

    def __call__(self, x: jax.Array, temb_act: jax.Array | None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """x: (B, H, W, in_ch); temb_act: SiLU(time embedding) (B, temb_dim), None for a block
        built with temb_dim=None -> (B, H, W, out_ch).

        Dropout is applied only when `dropout_key` is given and the rate is positive.
        """
        h = self.conv1(self.norm1(x, silu=True))
        if self.temb_proj is not None:
            h = h + self.temb_proj(temb_act)[:, None, None, :]
        h = self.norm2(h, silu=True)
        if dropout_key is not None and self.dropout > 0.0:
            h = dropout(dropout_key, h, self.dropout)
        h = self.conv2(h)
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip.astype(h.dtype) + h


class AttentionBlock(nnx.Module):
    """Residual multi-head self-attention over the H*W positions (GN, fused qkv, out projection).

    diffusers' `Attention(..., residual_connection=True, norm_num_groups=G)` as used by
    `AttnDownBlock2D`: 2c (norm) + 3(c^2 + c) (q, k, v) + c^2 + c (out) parameters.
    """

    def __init__(self, channels: int, num_heads: int, *, num_groups: int, dtype: str,
                 param_dtype: str, rngs: nnx.Rngs | None, eps: float = GROUP_NORM_EPS):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = GroupNorm(channels, num_groups, eps=eps, **kw)
        self.qkv = Dense(channels, 3 * channels, **kw)
        self.out = Dense(channels, channels, **kw)
        self.num_heads = num_heads

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        b, hh, ww, c = x.shape
        n, d = self.num_heads, c // self.num_heads
        h = self.norm(x).reshape(b, hh * ww, c)
        # (3, B, heads, L, d): heads-major so both products are plain batched matmuls.
        qkv = self.qkv(h).reshape(b, hh * ww, 3, n, d).transpose(2, 0, 3, 1, 4)
        o = attend_heads_major(qkv[0], qkv[1], qkv[2])
        o = o.transpose(0, 2, 1, 3).reshape(b, hh * ww, c)
        return x.astype(h.dtype) + self.out(o).reshape(b, hh, ww, c)


# float32 logits per tile of the CPU path (1 MiB): a tile's logits, exponentials and sums stay in
# the L2 cache instead of streaming the whole (L x L) matrix through memory three times.
_TILE_LOGITS = 1 << 18


def attend_heads_major(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False
                       ) -> jax.Array:
    """Scaled dot-product attention softmax(q k^T / sqrt(d)) v of heads-major inputs.

    On the CPU, long non-causal attention (e.g. 4096 positions of a 64x64 latent) runs one
    (head, block of queries) tile at a time: the same numbers, a few times faster and without
    the (L x L) logits in memory (measured: 2x8 heads of 4096 positions, 8.5 s and 2.5 GB at once
    vs 0.9-1.4 s and 0.4 GB tiled, on a loaded 2-core machine).

    Args:
      q: (B, heads, Lq, d); k, v: (B, heads, Lk, d), all in the compute dtype.
      causal: mask key positions after each query position (requires Lq == Lk).

    Returns:
      (B, heads, Lq, d) in v's dtype; logits and the softmax are float32.
    """
    chunk = None if causal else _query_chunk(q.shape[2], k.shape[2])
    if chunk is None:
        return _attend(q, k, v, causal=causal)
    b, n, lq, d = q.shape
    per_head = lq // chunk
    q_tiles = q.reshape(b * n * per_head, chunk, d)
    k_heads, v_heads = k.reshape(b * n, -1, d), v.reshape(b * n, -1, d)

    def tile(args):
        q_tile, index = args
        head = index // per_head
        return _attend(q_tile[None, None], k_heads[head][None, None],
                       v_heads[head][None, None], causal=False)[0, 0]

    out = jax.lax.map(tile, (q_tiles, jnp.arange(b * n * per_head)))
    return out.reshape(b, n, lq, d)


def _query_chunk(lq: int, lk: int) -> int | None:
    """Queries per tile on the CPU (a divisor of lq near _TILE_LOGITS / lk), or None for one pass
    (short sequences, other backends, or no usable divisor)."""
    if jax.default_backend() != "cpu":
        return None
    target = max(1, _TILE_LOGITS // lk)
    if target >= lq:
        return None
    chunk = next(c for c in range(target, 0, -1) if lq % c == 0)
    return chunk if 4 * chunk >= target else None


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool) -> jax.Array:
    d = q.shape[-1]
    q = q * jnp.asarray(d ** -0.5, q.dtype)
    logits = jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=jnp.float32)
    if causal:
        lq, lk = logits.shape[-2:]
        allowed = jnp.arange(lk)[None, :] <= jnp.arange(lq)[:, None]
        logits = jnp.where(allowed, logits, -jnp.inf)
    # softmax with the normalisation applied after the value product (L x d, not L x L
    # divisions); the max is a constant shift, so stopping its gradient is exact.
    logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    unnormalised = jnp.exp(logits)
    o = jnp.einsum("bnqk,bnkd->bnqd", unnormalised.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
    return (o / jnp.sum(unnormalised, axis=-1, keepdims=True)).astype(v.dtype)


def multi_head_attention(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int, *,
                         causal: bool = False) -> jax.Array:
    """Attention of projected queries (B, Lq, C) over keys and values (B, Lk, C), with C split
    into `num_heads` heads of C // num_heads channels -> (B, Lq, C) (heads concatenated)."""
    b, lq, c = q.shape
    lk = k.shape[1]
    d = c // num_heads

    def split(x, length):
        return x.reshape(b, length, num_heads, d).transpose(0, 2, 1, 3)

    o = attend_heads_major(split(q, lq), split(k, lk), split(v, lk), causal=causal)
    return o.transpose(0, 2, 1, 3).reshape(b, lq, c)


class LayerNorm(nnx.Module):
    """Layer normalisation (Ba et al. 2016) over the last axis, statistics in float32, as torch's
    `nn.LayerNorm(features, eps)`: 2 * features parameters (`scale`, `bias`)."""

    def __init__(self, features: int, *, eps: float = 1e-5, dtype: str = "float32",
                 param_dtype: str = "float32", rngs: nnx.Rngs | None):
        del rngs
        self.scale = nnx.Param(_const(1.0, (features,), param_dtype))
        self.bias = nnx.Param(_const(0.0, (features,), param_dtype))
        self.eps = float(eps)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(DTYPES[self.dtype])
