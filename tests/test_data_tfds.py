"""TFDS datasets by name: mocked mnist/cifar10, a real Image-feature dataset, and bad input.

mnist and cifar10 are mocked with `tfds.testing.mock_data(policy=USE_FILES)` over metadata
written here (split sizes, array_record format), so the pipeline goes through the real
`as_data_source` code path without downloads.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxdiff.data import dataset_info, input_pipeline, load_split

NUM = 12
ARGS = {"seed": 0, "shard_index": 0, "shard_count": 1}


def write_metadata(name: str, data_dir: str, file_format: str = "array_record") -> None:
    """Writes dataset_info.json/features.json as if `name` had been prepared in data_dir."""
    builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
    splits = []
    for split, n in (("train", NUM), ("test", NUM)):
        template = tfds.core.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name=name,
                                                 split=split, filetype_suffix=file_format)
        splits.append(tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                                          filename_template=template))
    builder.info.set_splits(tfds.core.SplitDict(splits))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


@pytest.fixture(scope="module")
def mock_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds_meta"))
    write_metadata("mnist", path)
    write_metadata("cifar10", path)
    return path


def mocked(data_dir):
    return tfds.testing.mock_data(num_examples=NUM, policy=tfds.testing.MockPolicy.USE_FILES,
                                  data_dir=data_dir)


def raw_images(name, data_dir):
    source = tfds.data_source(name, split="train", data_dir=data_dir)
    return np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float64)


@pytest.mark.parametrize("name, size, channels", [("mnist", 28, 1), ("cifar10", 32, 3)])
def test_mock_dataset_at_native_size_gives_scaled_images_in_order(mock_dir, name, size,
                                                                  channels):
    config = {"name": name, "data_dir": mock_dir, "image_size": size, "channels": channels}
    with mocked(mock_dir):
        raw = raw_images(name, mock_dir)
        batch = next(input_pipeline(config, batch_size=NUM, shuffle=False, **ARGS))
    assert batch["image"].shape == (NUM, size, size, channels)
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    np.testing.assert_allclose(batch["image"], raw / 127.5 - 1.0, atol=1e-6)
    assert batch["label"].min() >= 0 and batch["label"].max() < 10


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_mock_dataset_resized_to_16_stays_in_range(mock_dir, name):
    config = {"name": name, "data_dir": mock_dir, "image_size": 16,
              "channels": 3 if name == "cifar10" else 1}
    with mocked(mock_dir):
        batch = next(input_pipeline(config, batch_size=4, **ARGS))
    assert batch["image"].shape == (4, 16, 16, config["channels"])
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].std() > 0.05  # random mock pixels, not a constant


def test_cifar10_to_grey_is_bt601_luma(mock_dir):
    config = {"name": "cifar10", "data_dir": mock_dir, "image_size": 32, "channels": 1}
    with mocked(mock_dir):
        raw = raw_images("cifar10", mock_dir)
        images, _ = load_split(config, "train")
    luma = raw @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(images[..., 0], luma / 127.5 - 1.0, atol=2e-6)


def test_mock_dataset_info(mock_dir):
    with mocked(mock_dir):
        info = dataset_info({"name": "cifar10", "data_dir": mock_dir, "image_size": 32,
                             "channels": 3})
    assert info.image_shape == (32, 32, 3)
    assert info.num_classes == 10
    assert info.num_train_examples == NUM
    assert info.splits == ("test", "train")


class PngPictures(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """An Image-feature dataset ('picture', no label), as mnist-like datasets are stored."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "picture": tfds.features.Image(shape=(6, 10, 3)),
        }), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            yield i, {"picture": picture(i)}


def picture(i: int) -> np.ndarray:
    return (np.arange(6 * 10 * 3).reshape(6, 10, 3) * (i + 1) % 256).astype(np.uint8)


def encode_png(self, image) -> bytes:
    """Stand-in for TFDS's TensorFlow PNG encoder (only building needs TensorFlow)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("png_tfds"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds.features.Image, "encode_example", encode_png)
        PngPictures(data_dir=path, file_format="array_record").download_and_prepare()
    return path


def test_image_feature_dataset_reads_with_configured_keys_and_no_labels(png_dir):
    config = {"name": "png_pictures", "data_dir": png_dir, "image_key": "picture",
              "image_size": 6, "channels": 3}
    images, labels = load_split(config, "train")
    # Centre square crop of the 6x10 pictures: columns 2..7.
    want = np.stack([picture(i)[:, 2:8] for i in range(4)]).astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(images, want, atol=1e-6)
    np.testing.assert_array_equal(labels, np.zeros(4, np.int32))
    info = dataset_info(config)
    assert info.num_classes == 0 and info.image_shape == (6, 6, 3)


def test_reading_image_features_needs_no_tensorflow(png_dir):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed; this checks reading without it")
    images, _ = load_split({"name": "png_pictures", "data_dir": png_dir,
                            "image_key": "picture"}, "train")
    assert images.shape == (4, 16, 16, 1)


def test_missing_image_key_lists_the_features(png_dir):
    with pytest.raises(ValueError, match=r"no image feature 'image' .* features are \['picture'\]"):
        dataset_info({"name": "png_pictures", "data_dir": png_dir})


def test_missing_label_key_lists_the_features(png_dir):
    with pytest.raises(ValueError, match=r"no label feature 'cls' .* \['picture'\]"):
        dataset_info({"name": "png_pictures", "data_dir": png_dir, "image_key": "picture",
                      "label_key": "cls"})


class RgbaTensors(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 4), dtype=np.uint8)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"image": np.zeros((4, 4, 4), np.uint8)}


def test_four_channel_images_are_rejected(tmp_path):
    RgbaTensors(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    with pytest.raises(ValueError, match=r"shape \(4, 4, 4\).* C in \[1, 3\]"):
        dataset_info({"name": "rgba_tensors", "data_dir": str(tmp_path)})


def test_unknown_dataset_name_lists_accepted_forms(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'no_such_set'.*'digits'.*"
                                         r"'folder:<path>'.*tfds build"):
        dataset_info({"name": "no_such_set", "data_dir": str(tmp_path)})


def test_unprepared_tfds_dataset_names_the_path_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"'mnist' is not prepared .*{tmp_path}.*"
                                                r"tfds build mnist --data_dir"):
        dataset_info({"name": "mnist", "data_dir": str(tmp_path)})


def test_tfrecord_dataset_asks_for_array_record(tmp_path):
    write_metadata("mnist", str(tmp_path), file_format="tfrecord")
    with pytest.raises(ValueError, match="stored as 'tfrecord'.*--file_format=array_record"):
        dataset_info({"name": "mnist", "data_dir": str(tmp_path)})
