"""Datasets for jaxdiff: embedded digits (a TFDS builder), any prepared TFDS dataset, image folders.

All go through one grain pipeline (`input_pipeline`) that yields batches
{"image": float32 (B, H, W, C) in [-1, 1], "label": int32 (B,)}; `dataset_info` describes a
dataset from metadata and `load_split` returns a whole split as arrays for evaluation.
See docs/data.md for preparing TFDS datasets and the image-folder layout.
"""

from jaxdiff.data.digits_arrays import digits_arrays
from jaxdiff.data.pipeline import dataset_info, input_pipeline, load_split
from jaxdiff.data.sources import DataOptions, DatasetInfo, options_from_config

__all__ = [
    "DataOptions",
    "DatasetInfo",
    "dataset_info",
    "digits_arrays",
    "input_pipeline",
    "load_split",
    "options_from_config",
    "prepare_digits",
]


def __getattr__(name):
    if name == "prepare_digits":  # imports the TFDS builder (and registers it) only when asked
        from jaxdiff.data.digits_builder import prepare_digits

        return prepare_digits
    raise AttributeError(f"module 'jaxdiff.data' has no attribute {name!r}")
