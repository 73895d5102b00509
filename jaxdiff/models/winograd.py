"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016), for CPU
inference.

Each 2x2 output tile of a 3x3, stride-1, 'SAME' convolution is computed from its 4x4 input tile
as  Y = A^T [ (G g G^T) * (B^T d B) ] A : the 16 products per tile and channel pair are one
batched matrix product (16 of them, tiles x in_channels @ in_channels x out_channels), 16
multiplications where the direct convolution needs 36 (2.25x fewer FLOPs). The transforms only add
and halve, so the result differs from the direct convolution by a few float32 roundings.

On the 2-core CPU of benchmarks/RESULTS.md the direct XLA convolution of Stable Diffusion's UNet
levels at 256x256 images (batch 4 = guided batch 2) against this path, interleaved medians:
16x16x640 46.7 vs 28.5 ms, 8x8x1280 43.7 vs 29.4 ms, 4x4x1280 18.2 vs 12.9 ms, 32x32x320 46.8 vs
42.6 ms; all 3x3 convolutions of one UNet call 2.45 s vs 1.88 s. On large images the transforms'
memory traffic wins over the saved products (1x256x256x128: 101 vs 183 ms), so the fast path is
taken only up to `MAX_PIXELS` output positions (batch x height x width) and a larger input runs
the direct convolution of the recovered kernel.

The kernel transform G g G^T writes 16/9 of the kernel and costs about as much as the convolution
itself, so it is done once, when a pipeline is loaded (`prepare_params`): the prepared parameters
hold (16, in, out) kernels that `jaxdiff.models.layers.Conv` recognises by their rank.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# Output positions (batch x height x width) up to which the Winograd path is faster here (see the
# module docstring: 4x32x32 about even, 1x128x128 0.8x, 1x256x256 0.55x).
MAX_PIXELS = 4096
# Convolutions with fewer input or output channels (a UNet's conv_in / conv_out, an RGB head)
# are memory-bound: the transforms would cost more than the products save.
MIN_CHANNELS = 64


def _forward_rows(g: jax.Array) -> jax.Array:
    """G g along axis 0, G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
    return jnp.stack([g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2]])


def _inverse_rows(u: jax.Array) -> jax.Array:
    """The left inverse of `_forward_rows` along axis 0 (rows 0 and 3 are g0 and g2)."""
    return jnp.stack([u[0], 2.0 * u[1] - u[0] - u[3], u[3]])


def transform_kernel(kernel: jax.Array) -> jax.Array:
    """(3, 3, in, out) HWIO kernel -> (16, in, out) Winograd-domain kernel G g G^T (row-major
    over the 4x4 tile), computed in float32 and returned in the kernel's dtype."""
    g = kernel.astype(jnp.float32)
    u = jnp.swapaxes(_forward_rows(jnp.swapaxes(_forward_rows(g), 0, 1)), 0, 1)
    return u.reshape(16, *kernel.shape[2:]).astype(kernel.dtype)


def recover_kernel(u: jax.Array) -> jax.Array:
    """(16, in, out) Winograd-domain kernel -> the (3, 3, in, out) kernel it was made from (exact
    up to float32 rounding)."""
    u4 = u.astype(jnp.float32).reshape(4, 4, *u.shape[1:])
    g = jnp.swapaxes(_inverse_rows(jnp.swapaxes(_inverse_rows(u4), 0, 1)), 0, 1)
    return g.astype(u.dtype)


def _input_rows(r: list[jax.Array]) -> list[jax.Array]:
    """B^T d for the four rows of a 4-row tile, B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0],
    [0,1,0,-1]]."""
    return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]


def conv3x3(x: jax.Array, u: jax.Array) -> jax.Array:
    """'SAME' stride-1 3x3 convolution of NHWC `x` with a Winograd-domain kernel `u` (16, C, O)
    -> (B, H, W, O) in x's dtype (any H, W: odd sizes are padded to whole tiles and cropped)."""
    b, h, w, c = x.shape
    th, tw = -(-h // 2), -(-w // 2)
    xp = jnp.pad(x, ((0, 0), (1, 1 + 2 * th - h), (1, 1 + 2 * tw - w), (0, 0)))
    # the 4x4 input tiles start every 2 pixels: row r of every tile is xp[:, r::2][:th]
    by_rows = _input_rows([xp[:, r:r + 2 * th:2] for r in range(4)])
    v = [t for rows in by_rows for t in _input_rows([rows[:, :, s:s + 2 * tw:2] for s in range(4)])]
    m = jnp.einsum("ptc,pco->pto", jnp.stack(v).reshape(16, b * th * tw, c), u.astype(x.dtype))
    m = m.reshape(4, 4, b, th, tw, -1)
    # A^T m A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], along the tile's rows, then its columns
    s = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])
    y = jnp.stack([jnp.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]]) for r in s])
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * th, 2 * tw, -1)
    return y[:, :h, :w]


def use_fast_path(x_shape: tuple[int, ...]) -> bool:
    """Whether an input of this NHWC shape takes the Winograd products (see MAX_PIXELS)."""
    return x_shape[0] * x_shape[1] * x_shape[2] <= MAX_PIXELS


def eligible(conv: Any, min_channels: int | None = None) -> bool:
    """A `jaxdiff.models.layers.Conv` that F(2x2, 3x3) computes: 3x3, stride 1, padding 1, at
    least `min_channels` input and output channels."""
    min_channels = MIN_CHANNELS if min_channels is None else min_channels
    kernel = conv.kernel[...]
    return (kernel.ndim == 4 and kernel.shape[:2] == (3, 3) and conv.stride == 1
            and conv.padding == ((1, 1), (1, 1))
            and min(kernel.shape[2], kernel.shape[3]) >= min_channels)


@jax.jit
def _transform_all(kernels: list) -> list:
    # one compilation for all of a network's kernels (one per shape would cost ~0.2 s each)
    return [transform_kernel(k) for k in kernels]


def prepare_params(graphdef, params: dict, *, min_channels: int | None = None) -> dict:
    """Params with the kernels of the eligible convolutions (`eligible`; min_channels None is
    MIN_CHANNELS) replaced by their Winograd-domain kernels, for inference: `Conv` then uses
    F(2x2, 3x3) where `use_fast_path`. Other leaves are the same arrays; `params` itself is
    left as it is. Training must keep the plain kernels (the gradient would be taken in the
    Winograd domain)."""
    from flax import nnx

    from jaxdiff.models.functional import merge_params, split_params
    from jaxdiff.models.layers import Conv

    module = merge_params(graphdef, params)
    convs = [node for _, node in nnx.iter_graph(module)
             if isinstance(node, Conv) and eligible(node, min_channels)]
    if not convs:
        return params
    for conv, kernel in zip(convs, _transform_all([c.kernel[...] for c in convs])):
        conv.kernel = nnx.Param(kernel)
    return split_params(module)[1]
