"""Sample-quality metrics built on a classifier and a feature extractor.

`evaluate_samples` puts them together: Frechet distance and precision/recall in the feature space
of a `FeatureExtractor` (any callable images -> (N, D) features: the digits classifier by
default for 16x16x1 images; plug Inception or CLIP for other data), and the class statistics of
a classifier's predictions (confident fraction, class histogram and its entropy, accuracy against
the labels samples were conditioned on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from jaxdiff.evaluation.frechet import feature_statistics, frechet_distance
from jaxdiff.evaluation.precision_recall import precision_recall
from jaxdiff.validation import InputError, InputTypeError, check_choice

CONFIDENCE_THRESHOLD = 0.9

#: Entropy units: the logarithm base's natural log (nats: base e; bits: base 2).
ENTROPY_UNITS = {"nats": 1.0, "bits": math.log(2.0)}


class FeatureExtractor(Protocol):
    """Any callable mapping images (N, H, W, C) float32 in [-1, 1] to features (N, D)."""

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def _as_int_vector(x, what: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 1:
        raise InputError(f"{what} must have shape (N,); got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputTypeError(f"{what} must be integers; got dtype {array.dtype}")
    return array.astype(np.int64)


def class_histogram(preds, num_classes: int) -> np.ndarray:
    """Counts of each predicted class.

    Args:
      preds: (N,) integer class ids in [0, num_classes).
      num_classes: number of classes.

    Returns:
      (num_classes,) int64 counts, summing to N.
    """
    preds = _as_int_vector(preds, "preds")
    if preds.size and (preds.min() < 0 or preds.max() >= num_classes):
        raise InputError(f"preds must lie in [0, {num_classes}); got values from {preds.min()} "
                         f"to {preds.max()}")
    return np.bincount(preds, minlength=num_classes).astype(np.int64)


def entropy(histogram, unit: str = "bits") -> float:
    """Shannon entropy of the distribution proportional to a histogram (0 log 0 = 0).

    Args:
      histogram: (K,) non-negative counts or probabilities, not all zero.
      unit: "bits" (log base 2; uniform over 10 classes gives log2(10) = 3.32) or "nats" (base e).

    Returns:
      The entropy as a float.
    """
    check_choice("entropy unit", unit, ENTROPY_UNITS)
    h = np.asarray(histogram, dtype=np.float64)
    if h.ndim != 1 or np.any(h < 0) or not np.all(np.isfinite(h)) or h.sum() <= 0:
        raise InputError(f"histogram must be a 1-D array of non-negative finite values with a "
                         f"positive sum; got {h!r}")
    p = h[h > 0] / h.sum()
    return float(-np.sum(p * np.log(p)) / ENTROPY_UNITS[unit])


def confident_fraction(probabilities, threshold: float = CONFIDENCE_THRESHOLD) -> float:
    """Fraction of samples whose highest class probability is >= threshold.

    Args:
      probabilities: (N, K) class probabilities (rows sum to 1).
      threshold: in (0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise InputError(f"probabilities must have shape (N, num_classes) with N >= 1; got "
                         f"shape {p.shape}")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1]; got {threshold!r}")
    return float(np.mean(p.max(axis=1) >= threshold))


def conditional_accuracy(preds, requested_labels) -> float:
    """Fraction of samples classified as the label they were generated for.

    Args:
      preds: (N,) predicted classes.
      requested_labels: (N,) the class each sample was conditioned on.
    """
    preds = _as_int_vector(preds, "preds")
    labels = _as_int_vector(requested_labels, "requested_labels")
    if preds.shape != labels.shape or preds.size == 0:
        raise InputError(f"preds and requested_labels must have the same non-empty shape; got "
                         f"{preds.shape} and {labels.shape}")
    return float(np.mean(preds == labels))


def _check_image_batch(x, what: str) -> np.ndarray:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise InputTypeError(f"{what} must be an array (N, H, W, C); got {type(x).__name__}")
    if len(shape) != 4:
        raise InputError(f"{what} must be NHWC with rank 4; got shape {tuple(shape)}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InputTypeError(f"{what} must be floating point in [-1, 1]; got dtype {dtype}")
    array = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what} contain NaN or infinite values")
    return array


def _features(extractor: Callable, images: np.ndarray, what: str) -> np.ndarray:
    features = np.asarray(extractor(images))
    if features.ndim != 2 or features.shape[0] != images.shape[0]:
        raise InputError(f"the feature extractor must return (N, D) = ({images.shape[0]}, D) "
                         f"features for {what}; got shape {features.shape}")
    return features


def evaluate_samples(samples, real_images, extractor: FeatureExtractor | None = None,
                     classifier: Any = None, requested_labels=None, *, k: int = 3,
                     threshold: float = CONFIDENCE_THRESHOLD, clip: bool = True
                     ) -> dict[str, Any]:
    """All sample-quality metrics of `samples` against `real_images`.

    Args:
      samples: generated images (N, H, W, C) float in [-1, 1].
      real_images: reference images of the same H, W, C (e.g. the test split).
      extractor: images -> (N, D) features for the Frechet distance and precision/recall.
        Default: the digits classifier's features, when images are 16x16x1.
      classifier: an object with `.probabilities(images) -> (N, K)` (e.g. `DigitsClassifier`)
        for the class statistics. Default: the digits classifier when images are 16x16x1;
        otherwise class statistics are left out.
      requested_labels: (N,) labels the samples were conditioned on, for conditional accuracy.
      k: neighbour rank of precision/recall.
      threshold: confidence threshold of `confident_fraction`.
      clip: clip samples and real images to [-1, 1] first, as they are when saved as pictures
        (a sampler run without clipping can leave [-1, 1]; far-out values would otherwise drive
        the classifier to arbitrary confident answers).

    Returns:
      A dict of plain Python values: num_samples, num_real, out_of_range_fraction (of sample
      pixels outside [-1, 1], before clipping), feature_dim, frechet_distance,
      precision, recall, k; with a classifier also confident_fraction, confidence_threshold,
      class_histogram (list of counts), class_entropy_bits, class_entropy_nats,
      max_entropy_bits (log2 K); with labels also conditional_accuracy.
    """
    samples = _check_image_batch(samples, "samples")
    real_images = _check_image_batch(real_images, "real_images")
    if samples.shape[1:] != real_images.shape[1:]:
        raise InputError(f"samples and real_images must have the same image shape; got "
                         f"{samples.shape[1:]} and {real_images.shape[1:]}")
    out_of_range = float(np.mean(np.abs(samples) > 1.0))
    if clip:
        samples, real_images = np.clip(samples, -1, 1), np.clip(real_images, -1, 1)
    is_digits = samples.shape[1:] == (16, 16, 1)
    if (extractor is None or classifier is None) and is_digits:
        from jaxdiff.evaluation.classifier import load_digits_classifier

        default = load_digits_classifier()
        classifier = default if classifier is None else classifier
        extractor = default.features if extractor is None else extractor
    if extractor is None:
        raise InputError(f"no default feature extractor for images of shape "
                         f"{samples.shape[1:]} (the digits classifier takes (16, 16, 1)); pass "
                         f"extractor=<callable images -> (N, D) features>")
    fake_f = _features(extractor, samples, "samples")
    real_f = _features(extractor, real_images, "real_images")
    result: dict[str, Any] = {
        "num_samples": int(samples.shape[0]),
        "num_real": int(real_images.shape[0]),
        "out_of_range_fraction": out_of_range,
        "feature_dim": int(fake_f.shape[1]),
        "frechet_distance": frechet_distance(*feature_statistics(real_f),
                                             *feature_statistics(fake_f)),
        "k": int(k),
        **precision_recall(real_f, fake_f, k=k),
    }
    if classifier is not None:
        probs = np.asarray(classifier.probabilities(samples))
        preds = probs.argmax(axis=1)
        hist = class_histogram(preds, probs.shape[1])
        result.update(
            confident_fraction=confident_fraction(probs, threshold),
            confidence_threshold=float(threshold),
            class_histogram=hist.tolist(),
            class_entropy_bits=entropy(hist, "bits"),
            class_entropy_nats=entropy(hist, "nats"),
            max_entropy_bits=math.log2(probs.shape[1]),
        )
        if requested_labels is not None:
            result["conditional_accuracy"] = conditional_accuracy(preds, requested_labels)
    elif requested_labels is not None:
        raise InputError("requested_labels were given but there is no classifier to check "
                         "them; pass classifier=<object with .probabilities(images)>")
    return result
