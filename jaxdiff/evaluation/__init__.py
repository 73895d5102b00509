"""Sample-quality metrics: Frechet distance, precision/recall, class statistics, bits/dim.

The digits classifier (`load_digits_classifier`) is the default judge and feature space for
16x16x1 images; any callable images -> (N, D) features plugs in as a `FeatureExtractor`.
"""

from jaxdiff.evaluation.classifier import (
    DigitsClassifier,
    digits_split,
    load_digits_classifier,
    train_digits_classifier,
)
from jaxdiff.evaluation.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
)
from jaxdiff.evaluation.likelihood import bits_per_dim
from jaxdiff.evaluation.metrics import (
    FeatureExtractor,
    class_histogram,
    conditional_accuracy,
    confident_fraction,
    entropy,
    evaluate_samples,
)
from jaxdiff.evaluation.precision_recall import precision_recall

__all__ = [
    "DigitsClassifier",
    "FeatureExtractor",
    "bits_per_dim",
    "class_histogram",
    "conditional_accuracy",
    "confident_fraction",
    "digits_split",
    "entropy",
    "evaluate_samples",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "load_digits_classifier",
    "precision_recall",
    "train_digits_classifier",
]
