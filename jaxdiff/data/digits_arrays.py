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


def digits_split(split: str, image_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A digits split as a model trained on `data.name="digits"` sees it.

    The one path from the stored digits to model input: each image goes through the input
    pipeline's own `transforms.preprocess` (no flip), so the classifier, the pictures and the
    training data agree to the last bit.

    Returns:
      (images float32 (N, image_size, image_size, 1) in [-1, 1], labels int32 (N,)).

    >>> images, labels = digits_split("test")
    >>> images.shape, images.dtype, labels[:3].tolist()
    ((297, 16, 16, 1), dtype('float32'), [0, 4, 4])
    """
    from jaxdiff.data.transforms import preprocess

    images, labels = digits_arrays(split)
    x = np.stack([preprocess(image, size=image_size, channels=1, flip=False) for image in images])
    return x, labels.astype(np.int32)
