"""Per-example transforms against independent references (Pillow, float64 formulas)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxdiff.data.transforms import center_crop_resize, convert_channels, to_float


def test_to_float_maps_0_and_255_to_minus_one_and_one():
    x = np.array([0, 1, 127, 128, 254, 255], np.uint8).reshape(1, 6, 1)
    np.testing.assert_allclose(to_float(x)[0, :, 0], np.array([0, 1, 127, 128, 254, 255]) / 127.5
                               - 1.0, atol=1e-7)
    assert to_float(x).dtype == np.float32


@pytest.mark.parametrize("height, width, size", [(28, 28, 16), (32, 32, 7), (37, 50, 16),
                                                 (8, 8, 16), (5, 9, 12)])
def test_resize_equals_pillow_bilinear_on_float_images(height, width, size):
    image = np.random.default_rng(0).uniform(-1, 1, (height, width, 2)).astype(np.float32)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    want = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(
        image[top:top + side, left:left + side, c])).resize((size, size),
                                                            Image.Resampling.BILINEAR))
        for c in range(2)], axis=-1)
    got = center_crop_resize(image, size)
    assert got.shape == (size, size, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.clip(want, -1, 1), atol=1e-6)


def test_downsampling_by_two_averages_with_the_widened_triangle():
    # 4 -> 2: output i has centre 2i + 1; weights 1/8, 3/8, 3/8, 1/8 over inputs 2i-1..2i+2.
    x = np.array([0.1, -0.3, 0.5, 0.9], np.float64)
    w = np.array([1, 3, 3, 1], np.float64) / 8
    want = np.array([(w[1:] @ x[:3]) / w[1:].sum(), (w[:3] @ x[1:]) / w[:3].sum()])
    image = np.broadcast_to(x[None, :, None], (4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(center_crop_resize(image, 2)[0, :, 0], want, atol=1e-6)


def test_rgb_to_grey_is_bt601_luma_and_grey_to_rgb_repeats():
    rgb = np.random.default_rng(1).uniform(-1, 1, (3, 4, 3))
    grey = convert_channels(rgb.astype(np.float32), 1)
    np.testing.assert_allclose(grey[..., 0], rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    np.testing.assert_array_equal(convert_channels(grey, 3), np.repeat(grey, 3, axis=-1))


def test_two_channel_images_cannot_be_converted():
    with pytest.raises(ValueError, match="cannot convert an image with 2 channels to 3"):
        convert_channels(np.zeros((2, 2, 2), np.float32), 3)
