"""Damaged data: a truncated PNG/JPEG or a non-image file in an image folder stops the run
before training with the list of bad files, or is left out with `data.skip_bad_files`; a file or
TFDS record that fails to decode while training is named, or replaced by the next good one."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from jaxdiff.data import dataset_info, load_split
from jaxdiff.data.sources import TfdsSource
from jaxdiff.validation import InputError


def encoded(array, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def picture(seed: int, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture()
def damaged_folder(tmp_path):
    """good_a.png, good_b.png; cut.png (first half of a PNG), cut.jpg (a JPEG without its last
    bytes) and notes.png (text named like an image)."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "good_a.png").write_bytes(encoded(picture(0), "PNG"))
    (root / "good_b.png").write_bytes(encoded(picture(1), "PNG"))
    png = encoded(picture(2), "PNG")
    (root / "cut.png").write_bytes(png[:len(png) // 2])
    jpeg = encoded(picture(3, 32), "JPEG")
    (root / "cut.jpg").write_bytes(jpeg[:len(jpeg) - 40])
    (root / "notes.png").write_text("shopping list, not a picture")
    return root


BAD = ("cut.jpg", "cut.png", "notes.png")


def test_bad_files_stop_before_training_with_their_list(damaged_folder):
    with pytest.raises(InputError) as caught:
        dataset_info({"name": f"folder:{damaged_folder}"})
    message = str(caught.value)
    assert message.startswith(f"3 of 5 image files in {str(damaged_folder)!r} cannot be used")
    for name in BAD:
        assert repr(str(damaged_folder / name)) in message
    assert "good_a" not in message and "good_b" not in message
    assert "--config.data.skip_bad_files=True" in message


def test_skip_bad_files_leaves_them_out_and_counts_them_in_the_log(damaged_folder, caplog):
    config = {"name": f"folder:{damaged_folder}", "image_size": 12, "channels": 3,
              "skip_bad_files": True}
    with caplog.at_level(logging.WARNING, logger="jaxdiff.data"):
        info = dataset_info(config)
    assert info.num_train_examples == 2
    assert "skipped 3 of 5 image files" in caplog.text
    images, _ = load_split(config, "train")
    expected = np.stack([picture(0), picture(1)]).astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_the_cli_refuses_a_folder_with_bad_files_before_any_step(damaged_folder, tmp_path,
                                                                 capsys):
    from jaxdiff.cli import main

    workdir = tmp_path / "run"
    code = main(["train", "--workdir", str(workdir), f"--config.data.name=folder:{damaged_folder}",
                 "--config.data.channels=3", "--config.data.image_size=8",
                 "--config.train.batch_size=2", "--config.train.num_steps=2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "3 of 5 image files" in err
    assert not (workdir / "checkpoints").exists()


def test_a_file_damaged_after_opening_is_named_when_read(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(encoded(picture(i), "PNG"))
    config = {"name": f"folder:{tmp_path}", "image_size": 12, "channels": 3}
    from jaxdiff.data.sources import open_dataset

    source = open_dataset(config).source("train")  # all three pass the checks here
    png = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(png[:len(png) // 2])
    with pytest.raises(InputError, match=r"cannot decode image file '.*1\.png': OSError"):
        source[1]
    np.testing.assert_array_equal(source[2]["image"], picture(2))


def test_skip_bad_files_replaces_a_file_that_fails_when_read_by_the_next(tmp_path, caplog):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(encoded(picture(i), "PNG"))
    from jaxdiff.data.sources import open_dataset

    config = {"name": f"folder:{tmp_path}", "channels": 3, "skip_bad_files": True}
    source = open_dataset(config).source("train")
    png = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(png[:len(png) // 2])
    with caplog.at_level(logging.WARNING, logger="jaxdiff.data"):
        np.testing.assert_array_equal(source[1]["image"], picture(2))
    assert "skipping image file" in caplog.text and "1.png" in caplog.text


class _Records:
    """A TFDS-like data source whose record `bad` fails to decode as Pillow would fail."""

    def __init__(self, count: int, bad: int):
        self.count, self.bad = count, bad

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if index == self.bad:
            raise OSError("image file is truncated (3 bytes not processed)")
        return {"image": np.full((2, 2, 1), index, np.uint8), "label": index}

    def __getitems__(self, indices):
        return [self[i] for i in indices]


def test_a_tfds_record_that_fails_to_decode_is_named():
    source = TfdsSource(_Records(4, bad=2), "image", "label", "split 'train' of dataset 'toy'")
    with pytest.raises(InputError, match=r"cannot decode record 2 of split 'train' of dataset "
                                         r"'toy': OSError: image file is truncated"):
        source.read_many([0, 2])
    assert source.read_many([0, 1])[1]["label"] == 1


def test_skip_bad_files_replaces_a_tfds_record_that_fails_to_decode(caplog):
    source = TfdsSource(_Records(4, bad=2), "image", "label", "split 'train' of dataset 'toy'",
                        skip_bad_files=True)
    with caplog.at_level(logging.WARNING, logger="jaxdiff.data"):
        records = source.read_many([1, 2, 3])
    assert [r["label"] for r in records] == [1, 3, 3]
    assert "skipping record 2 of split 'train' of dataset 'toy'" in caplog.text
    assert "1 skipped so far" in caplog.text
