"""Per-example image transforms (NumPy + Pillow, run inside grain; no JAX, no TensorFlow).

Order, for every dataset: uint8 (H, W, C) -> float32 in [-1, 1] -> channel conversion ->
center square crop + resize to (size, size) -> optional horizontal flip.

Resizing is Pillow's BILINEAR filter computed in float32 with NumPy (two small matrix products):
on upsampling it is linear interpolation at pixel centres (the 8x8 digits go to 16x16 this way);
on downsampling the triangle kernel is widened by the scale factor, i.e. it antialiases (like
`jax.image.resize(..., "linear", antialias=True)`). A triangle filter has non-negative weights
summing to one, so the result stays in [-1, 1] (no ringing, unlike bicubic or Lanczos). Working
in float avoids rounding the interpolated values back to 8 bits; NumPy avoids Pillow's
per-image object overhead (~30 us per plane here).
"""

from __future__ import annotations

import functools

import numpy as np

from jaxdiff.validation import InputError

CHANNELS = (1, 3)
# ITU-R BT.601 luma weights (the ones Pillow's RGB -> "L" conversion uses).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) in [0, 255] -> float32 (H, W, C) in [-1, 1] (0 -> -1, 255 -> 1)."""
    return image.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) with C in {1, 3} -> (H, W, channels): grey -> RGB repeats, RGB -> grey is luma."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        return (image @ LUMA_WEIGHTS)[..., None].astype(image.dtype)
    raise InputError(f"cannot convert an image with {have} channels to {channels} channels; "
                     f"only 1 <-> 3 conversions are supported (data.channels is one of "
                     f"{list(CHANNELS)})")


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of a 1-D triangle (bilinear) resize, antialiased.

    Output pixel i has its centre at (i + 0.5) * n_in / n_out in input coordinates; input pixel j
    gets weight max(0, 1 - |j + 0.5 - centre| / s) with s = max(n_in / n_out, 1) (the kernel is
    widened by the scale factor when downsampling), and each row is normalised to sum 1. These
    are Pillow's BILINEAR weights (the tests compare with Pillow and a float64 formula).
    Cached: a pure function of two ints.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    offsets = (np.arange(n_in, dtype=np.float64) + 0.5)[None, :] - centres[:, None]
    weights = np.maximum(0.0, 1.0 - np.abs(offsets) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """float32 (H, W, C) -> (size, size, C): centre square crop of side min(H, W), then resize.

    This equals "resize the shorter side to `size`, then centre-crop", up to where the crop
    boundary falls when the sides differ by an odd number of pixels. The resize is separable:
    `R @ X @ R.T` per channel with R = `resize_matrix(side, size)`.
    """
    height, width, _ = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(image, dtype=np.float32)
    weights = resize_matrix(side, size)
    channels = image.shape[-1]
    rows = (weights @ image.reshape(side, side * channels)).reshape(size, side, channels)
    out = np.matmul(weights, rows)  # out[i] = weights @ rows[i]: (size, size, channels)
    return np.clip(out, -1.0, 1.0, out=out)


def flip_bit(seed: int, position: int) -> bool:
    """A fair coin from (seed, stream position) via the splitmix64 finaliser (Steele et al. 2014).

    The position in the repeated, shuffled stream identifies (epoch, index within epoch), so a
    flip decision is a pure function of (seed, epoch, index): it replays exactly after a restore.
    """
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return bool((z ^ (z >> 31)) >> 63)


def preprocess(image: np.ndarray, *, size: int, channels: int, flip: bool) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (size, size, channels) in [-1, 1], mirrored if `flip`."""
    x = convert_channels(to_float(image), channels)
    x = center_crop_resize(x, size)
    if flip:
        x = np.ascontiguousarray(x[:, ::-1])
    return x
