"""Image folders: class subfolders, mixed sizes and modes, conversions, and bad folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxdiff.data import dataset_info, input_pipeline, load_split

ARGS = {"seed": 0, "shard_index": 0, "shard_count": 1}


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def gradient_rgb(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, 100)], -1).astype(np.uint8)


@pytest.fixture()
def classes(tmp_path):
    """cats/: RGB 12x20 and grey 10x10 (.PNG) images; dogs/sub/: a 16x16 RGB bmp; junk."""
    root = tmp_path / "images"
    save(root / "cats" / "a.png", gradient_rgb(12, 20))
    save(root / "cats" / "b.PNG", np.full((10, 10), 200, np.uint8))
    save(root / "dogs" / "sub" / "c.bmp", gradient_rgb(16, 16))
    (root / "dogs" / "notes.txt").write_text("not an image")
    save(root / ".hidden" / "d.png", gradient_rgb(4, 4))
    return root


def test_class_subfolders_give_sorted_labels_and_info(classes):
    config = {"name": f"folder:{classes}", "image_size": 8, "channels": 3}
    info = dataset_info(config)
    assert info.num_classes == 2 and info.num_train_examples == 3
    assert info.splits == ("train",) and info.image_shape == (8, 8, 3)
    images, labels = load_split(config, "train")
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 1])
    assert -1.0 <= images.min() and images.max() <= 1.0


def test_grey_image_becomes_equal_rgb_channels(classes):
    images, _ = load_split({"name": f"folder:{classes}", "image_size": 10, "channels": 3},
                           "train")
    np.testing.assert_allclose(images[1], np.full((10, 10, 3), 200 / 127.5 - 1.0), atol=1e-6)


def test_rgb_image_becomes_pillow_luma_and_is_center_cropped(classes):
    images, _ = load_split({"name": f"folder:{classes}", "image_size": 12, "channels": 1},
                           "train")
    rgb = gradient_rgb(12, 20)[:, 4:16].astype(np.float64)  # centre 12x12 of a 12x20 image
    # Pillow's "L" conversion: integer luma (R*299 + G*587 + B*114) / 1000, rounded.
    luma = np.floor((rgb @ np.array([299.0, 587.0, 114.0]) + 500) / 1000)
    np.testing.assert_allclose(images[0, ..., 0], luma / 127.5 - 1.0, atol=1e-6)


def test_pipeline_batches_folder_images(classes):
    config = {"name": f"folder:{classes}", "image_size": 8, "channels": 1, "random_flip": True}
    batch = next(input_pipeline(config, batch_size=3, **ARGS))
    assert batch["image"].shape == (3, 8, 8, 1)
    assert sorted(batch["label"].tolist()) == [0, 0, 1]


def test_flat_folder_is_unlabeled(tmp_path):
    save(tmp_path / "x.jpg", gradient_rgb(9, 9))
    save(tmp_path / "y.webp", gradient_rgb(5, 7))
    info = dataset_info({"name": f"folder:{tmp_path}"})
    assert info.num_classes == 0 and info.num_train_examples == 2
    _, labels = load_split({"name": f"folder:{tmp_path}"}, "train")
    np.testing.assert_array_equal(labels, [0, 0])


def test_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_info({"name": f"folder:{tmp_path / 'nope'}"})


def test_folder_without_images_lists_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"holds no images; accepted extensions are "
                                         r"\['.bmp', '.jpeg', '.jpg', '.png', '.webp'\]"):
        dataset_info({"name": f"folder:{tmp_path}"})


def test_empty_class_subfolder_is_an_error(tmp_path):
    save(tmp_path / "a" / "x.png", gradient_rgb(4, 4))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError,
                       match="class subfolder '.*/b' of image folder .* holds no images"):
        dataset_info({"name": f"folder:{tmp_path}"})


def test_images_next_to_class_subfolders_are_an_error(tmp_path):
    save(tmp_path / "a" / "x.png", gradient_rgb(4, 4))
    save(tmp_path / "loose.png", gradient_rgb(4, 4))
    with pytest.raises(ValueError, match="also 1 images at its top level"):
        dataset_info({"name": f"folder:{tmp_path}"})


def test_sixteen_bit_image_cannot_be_converted(tmp_path):
    save(tmp_path / "deep.png", np.full((4, 4), 40000, np.uint16))
    with pytest.raises(ValueError, match=r"Pillow mode 'I;16'.*cannot be converted"):
        dataset_info({"name": f"folder:{tmp_path}"})


def test_unreadable_image_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(ValueError, match=r"broken\.png': cannot read image file"):
        dataset_info({"name": f"folder:{tmp_path}"})


def test_folder_has_only_a_train_split(classes):
    with pytest.raises(ValueError, match=r"unknown split 'test' .* \['train'\]"):
        load_split({"name": f"folder:{classes}"}, "test")
