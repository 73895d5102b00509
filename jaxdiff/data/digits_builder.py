"""The embedded "digits" dataset as a real TFDS dataset (no download, no TensorFlow).

`JaxdiffDigits` is a `tfds.core.GeneratorBasedBuilder` (TFDS name "jaxdiff_digits"; jaxdiff's
user-facing name is "digits") that writes scikit-learn's bundled 8x8 digits, with the fixed
train/test split of `digits_arrays`, as array_record files into a TFDS data_dir. The features are
`tfds.features.Tensor` (uint8 image (8, 8, 1)) and `tfds.features.ClassLabel` (10 classes), which
encode and decode without TensorFlow. Examples are stored in generation order
(`disable_shuffling=True`), so index i of a split is example i of `digits_arrays(split)`.

`prepare_digits(data_dir)` builds it on first use. Concurrent processes are safe: the build runs
under an exclusive `fcntl.flock` on `<data_dir>/jaxdiff_digits.lock` (left in place; removing
lock files is racy), and TFDS itself writes into a temporary `incomplete.*` folder that it renames
to `<data_dir>/jaxdiff_digits/1.0.0` only when complete, so a reader never sees a partial dataset.
Where file locks do not work (some network file systems), a process that loses the final rename
finds the dataset prepared by the winner and uses it.
"""

from __future__ import annotations

import contextlib
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxdiff.data.digits_arrays import NUM_CLASSES, digits_arrays

TFDS_NAME = "jaxdiff_digits"
SPLITS = ("test", "train")


class JaxdiffDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), fixed split: 1500 train / 297 test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First release: sklearn digits, uint8 (8, 8, 1), fixed split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("scikit-learn's bundled 8x8 handwritten digits, pixel values 0..16 "
                         "scaled to 0..255; fixed split (permutation seed 0): 1500 train, 297 "
                         "test."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the arrays ship with scikit-learn.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        images, labels = digits_arrays(split)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


@contextlib.contextmanager
def _exclusive_lock(path: str):
    """Holds an exclusive advisory lock on `path` (no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_digits(data_dir: str | os.PathLike) -> JaxdiffDigits:
    """Builds the digits dataset into `data_dir` unless it is there already; returns the builder.

    Args:
      data_dir: a TFDS data directory; the dataset goes to `<data_dir>/jaxdiff_digits/1.0.0`.

    Returns:
      A prepared `JaxdiffDigits` builder; read it with `builder.as_data_source(split)` or
      `tfds.data_source("jaxdiff_digits", data_dir=data_dir, split=split)`.
    """
    data_dir = os.fspath(os.path.expanduser(data_dir))
    builder = JaxdiffDigits(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(data_dir, f"{TFDS_NAME}.lock")):
        builder = JaxdiffDigits(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            try:
                builder.download_and_prepare()
            except OSError:
                # Another host renamed its finished copy into place first (no working lock).
                builder = JaxdiffDigits(data_dir=data_dir, file_format="array_record")
                if not builder.is_prepared():
                    raise
    return JaxdiffDigits(data_dir=data_dir, file_format="array_record")
