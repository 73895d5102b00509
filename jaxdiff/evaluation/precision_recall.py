"""Improved precision and recall of generative models (Kynkaanniemi et al. 2019).

Each set of feature vectors defines a manifold: the union of balls centred on its points, each
ball's radius being the distance to that point's k-th nearest neighbour in the same set.
  precision = fraction of generated points inside the real manifold (are samples realistic?)
  recall    = fraction of real points inside the generated manifold (is the data covered?)
Distances are Euclidean, in float64, computed blockwise so memory stays O(block * N).
"""

from __future__ import annotations

import numpy as np

from jaxdiff.evaluation.frechet import _as_features
from jaxdiff.validation import InputError

_BLOCK = 1024


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against rounding."""
    d = (np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T))
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in the same set (self excluded).

    Args:
      features: (N, D) float64, N > k.
      k: neighbour rank, >= 1.

    Returns:
      (N,) float64 radii.
    """
    n = features.shape[0]
    radii = np.empty(n, dtype=np.float64)
    for start in range(0, n, _BLOCK):
        d = _sq_distances(features[start:start + _BLOCK], features)
        # Row i holds its own zero distance; the (k+1)-th smallest value is the k-th neighbour.
        radii[start:start + _BLOCK] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return radii


def _fraction_inside(points: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of `points` within distance radii[j] of some centers[j]."""
    sq_radii = radii * radii
    inside = np.zeros(points.shape[0], dtype=bool)
    for start in range(0, points.shape[0], _BLOCK):
        d = _sq_distances(points[start:start + _BLOCK], centers)
        inside[start:start + _BLOCK] = np.any(d <= sq_radii[None, :], axis=1)
    return float(np.mean(inside))


def precision_recall(real_features, fake_features, k: int = 3) -> dict[str, float]:
    """Improved precision and recall with k-nearest-neighbour manifolds.

    Args:
      real_features: (N_real, D) features of real data, N_real > k.
      fake_features: (N_fake, D) features of generated samples, N_fake > k.
      k: neighbour rank for the radii (the paper uses 3).

    Returns:
      {"precision": float in [0, 1], "recall": float in [0, 1]}.

    Example:
      >>> x = np.random.default_rng(0).normal(size=(50, 4))
      >>> precision_recall(x, x)
      {'precision': 1.0, 'recall': 1.0}

    References:
      Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative
      Models", sec. 2 (eqs. 1-3).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be an integer >= 1; got {k!r}")
    real = _as_features(real_features, "real_features")
    fake = _as_features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise InputError(f"feature dimensions differ: real has {real.shape[1]}, fake has "
                         f"{fake.shape[1]}")
    for name, x in (("real_features", real), ("fake_features", fake)):
        if x.shape[0] <= k:
            raise InputError(f"{name} needs more than k={k} samples; got {x.shape[0]}")
    precision = _fraction_inside(fake, real, knn_radii(real, k))
    recall = _fraction_inside(real, fake, knn_radii(fake, k))
    return {"precision": precision, "recall": recall}
