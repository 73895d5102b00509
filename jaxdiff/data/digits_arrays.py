"""scikit-learn's bundled 8x8 digits (no download) with jaxdiff's fixed train/test split."""

from __future__ import annotations

import numpy as np

from jaxdiff.validation import InputError

NUM_EXAMPLES = 1797
NUM_TEST = 297
NUM_CLASSES = 10
SPLIT_SEED = 0


def digits_arrays(split: str):
    """Returns (images uint8 (N, 8, 8, 1) in [0, 255], labels int64 (N,)) of a fixed split.

    The split is a fixed permutation (seed 0) of all 1797 examples: the first 1500 are "train",
    the last 297 are "test". Pixel values 0..16 are scaled to 0..255.
    """
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r} of digits; choose one of ['test', 'train']")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(NUM_EXAMPLES)
    index = order[: NUM_EXAMPLES - NUM_TEST] if split == "train" else order[NUM_EXAMPLES - NUM_TEST:]
    return images[index], labels[index]
