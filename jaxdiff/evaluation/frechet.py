"""Frechet distance between Gaussians fitted to feature sets (the "FID" formula).

d^2 = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^{1/2})   (Heusel et al. 2017, eq. 6;
Dowson & Landau 1982). Everything is computed in float64 with numpy.

The trace of the matrix square root is computed without `scipy.linalg.sqrtm`: with S1 = C1^{1/2}
(symmetric, from an eigendecomposition), C1 C2 = S1 (S1 C2) and S1 C2 S1 = (S1 C2) S1 have the
same eigenvalues, so tr((C1 C2)^{1/2}) = sum_i sqrt(lambda_i(S1 C2 S1)). S1 C2 S1 is symmetric
positive semi-definite, so `eigvalsh` applies, and tiny negative eigenvalues that rounding
produces for singular or near-singular covariances are clipped to 0. This is exact for singular
covariances too (rank-deficient features, fewer samples than dimensions), where `sqrtm` of the
non-symmetric product is ill-conditioned and needs the usual "add eps to the diagonal" fix.
"""

from __future__ import annotations

import numpy as np

from jaxdiff.validation import InputError, InputTypeError


def _as_features(features, what: str) -> np.ndarray:
    array = np.asarray(features)
    if array.ndim != 2:
        raise InputError(f"{what} must have shape (num_samples, feature_dim); got shape "
                         f"{array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputTypeError(f"{what} must be a real-valued array; got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what} contains NaN or infinite values")
    return array


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, divisor N - 1) of features.

    Args:
      features: (N, D) array, N >= 2.

    Returns:
      (mu (D,), cov (D, D)), both float64.
    """
    x = _as_features(features, "features")
    if x.shape[0] < 2:
        raise InputError(f"feature_statistics needs at least 2 samples; got {x.shape[0]}")
    mu = x.mean(axis=0)
    centered = x - mu
    cov = centered.T @ centered / (x.shape[0] - 1)
    return mu, cov


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_stats(mu, cov, what: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.ndim != 1:
        raise InputError(f"mu{what} must have shape (D,); got shape {mu.shape}")
    if cov.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"cov{what} must have shape (D, D) = {(mu.shape[0],) * 2} to match "
                         f"mu{what}; got shape {cov.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise InputError(f"mu{what} / cov{what} contain NaN or infinite values")
    return mu, 0.5 * (cov + cov.T)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    Args:
      mu1, mu2: means, shape (D,).
      cov1, cov2: covariances, shape (D, D), symmetric positive semi-definite (singular is fine).

    Returns:
      The distance as a Python float >= 0 (float64 arithmetic; a rounding-level negative
      result is reported as 0).

    Example:
      >>> d = frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
      >>> round(d, 6)   # |mu1-mu2|^2 + sum (1 - 2)^2
      4.0

    References:
      Heusel et al. 2017 ("GANs trained by a two time-scale update rule..."), eq. 6.
    """
    mu1, cov1 = _check_stats(mu1, cov1, "1")
    mu2, cov2 = _check_stats(mu2, cov2, "2")
    if mu1.shape != mu2.shape:
        raise InputError(f"feature dimensions differ: mu1 has shape {mu1.shape}, mu2 has shape "
                         f"{mu2.shape}")
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1, features2) -> float:
    """frechet_distance of the Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
