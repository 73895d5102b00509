"""The embedded digits as a TFDS dataset, and the image transforms checked on it.

References are written here in float64 NumPy: x / 255 * 2 - 1 for the scaling, separable linear
interpolation at pixel centres for the 8x8 -> 16x16 resize, ITU-R 601 luma for RGB -> grey.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdiff.data import dataset_info, digits_arrays, load_split
from jaxdiff.data.digits_builder import prepare_digits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    prepare_digits(path)
    return path


def upsample_linear_reference(x: np.ndarray, size: int) -> np.ndarray:
    """float64 separable linear interpolation at pixel centres, edges clamped (upsampling)."""
    n = x.shape[0]
    coords = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = coords - lo
    rows = x[lo] * (1 - frac)[:, None, None] + x[hi] * frac[:, None, None]
    return rows[:, lo] * (1 - frac)[None, :, None] + rows[:, hi] * frac[None, :, None]


@pytest.mark.parametrize("split", ["train", "test"])
def test_built_digits_read_back_equal_digits_arrays(data_dir, split):
    images, labels = digits_arrays(split)
    source = tfds.data_source("jaxdiff_digits", data_dir=data_dir, split=split)
    assert len(source) == len(images)
    read_images = np.stack([source[i]["image"] for i in range(len(source))])
    read_labels = np.array([source[i]["label"] for i in range(len(source))])
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


def test_load_split_at_native_size_is_scaled_digits_arrays(data_dir):
    images, labels = digits_arrays("test")
    x, y = load_split({"name": "digits", "data_dir": data_dir, "image_size": 8}, "test")
    np.testing.assert_allclose(x, images.astype(np.float64) / 255.0 * 2.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert x.dtype == np.float32 and y.dtype == np.int32


def test_load_split_resizes_8_to_16_with_linear_interpolation(data_dir):
    images, _ = digits_arrays("test")
    x, _ = load_split({"name": "digits", "data_dir": data_dir, "image_size": 16}, "test",
                      max_examples=20)
    assert x.shape == (20, 16, 16, 1)
    for i in range(20):
        want = upsample_linear_reference(images[i].astype(np.float64) / 127.5 - 1.0, 16)
        np.testing.assert_allclose(x[i], want, atol=2e-6)


def test_load_split_to_rgb_repeats_the_grey_channel(data_dir):
    x, _ = load_split({"name": "digits", "data_dir": data_dir, "image_size": 8, "channels": 3},
                      "train", max_examples=5)
    assert x.shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_digits_info(data_dir):
    info = dataset_info({"name": "digits", "data_dir": data_dir})
    assert info.image_shape == (16, 16, 1)
    assert info.num_classes == 10
    assert info.num_train_examples == 1500
    assert info.splits == ("test", "train")
    assert dict(info.split_sizes) == {"train": 1500, "test": 297}


def test_concurrent_first_builds_all_succeed(tmp_path):
    # Threads open the lock file separately, so flock serialises them as it does processes.
    data_dir = str(tmp_path / "shared")
    errors = []

    def build():
        try:
            prepare_digits(data_dir)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    workers = [threading.Thread(target=build) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    leftovers = [n for n in os.listdir(os.path.join(data_dir, "jaxdiff_digits"))
                 if n.startswith("incomplete")]
    assert leftovers == []
    x, _ = load_split({"name": "digits", "data_dir": data_dir, "image_size": 8}, "test")
    np.testing.assert_allclose(x, digits_arrays("test")[0] / 127.5 - 1.0, atol=1e-6)
