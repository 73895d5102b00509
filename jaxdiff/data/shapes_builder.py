"""The embedded captioned "shapes" dataset as a TFDS dataset (no download, no TensorFlow).

`JaxdiffShapes` (TFDS name "jaxdiff_shapes"; jaxdiff's name is "shapes") writes the examples of
`jaxdiff.data.shapes` (seed 0) as array_record files: "image" uint8 (32, 32, 3), "caption" text,
"label" the first object's class (15), "objects" int32 (2,) class ids (-1: none) and "relation"
(-1 none, 0 "left of", 1 "above"). Splits "train" (20000) and "test" (2000, held-out two-object
combinations only), stored in generation order. `prepare_shapes(data_dir)` builds it once, under
an exclusive file lock as the digits are built.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxdiff.data import shapes
from jaxdiff.data.digits_builder import _exclusive_lock

TFDS_NAME = "jaxdiff_shapes"


class JaxdiffShapes(tfds.core.GeneratorBasedBuilder):
    """Captioned 32x32 images of one or two colored shapes (see `jaxdiff.data.shapes`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release (seed 0)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("One or two filled circles, squares or triangles in red, green, blue, "
                         "yellow or white on black, 32x32, with captions; the test split holds "
                         "two-object combinations that train never shows."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(shapes.SIZE, shapes.SIZE, 3),
                                              dtype=np.uint8),
                "caption": tfds.features.Text(),
                "label": tfds.features.ClassLabel(num_classes=shapes.NUM_CLASSES),
                "objects": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                "relation": tfds.features.Tensor(shape=(), dtype=np.int32),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # drawn, nothing to download
        return {split: self._generate_examples(split) for split in shapes.SPLIT_SIZES}

    def _generate_examples(self, split: str):
        for i in range(shapes.SPLIT_SIZES[split]):
            image, record = shapes.draw_example(split, i)
            yield i, {"image": image, "caption": record["caption"], "label": record["label"],
                      "objects": record["objects"], "relation": np.int32(record["relation"])}


def prepare_shapes(data_dir: str | os.PathLike) -> JaxdiffShapes:
    """Builds the shapes dataset into `<data_dir>/jaxdiff_shapes/1.0.0` unless it is there;
    returns the prepared builder (read with `builder.as_data_source(split)`)."""
    data_dir = os.fspath(os.path.expanduser(data_dir))
    builder = JaxdiffShapes(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(data_dir, f"{TFDS_NAME}.lock")):
        builder = JaxdiffShapes(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            try:
                builder.download_and_prepare()
            except OSError:  # another host renamed its finished copy into place first
                builder = JaxdiffShapes(data_dir=data_dir, file_format="array_record")
                if not builder.is_prepared():
                    raise
    return JaxdiffShapes(data_dir=data_dir, file_format="array_record")
