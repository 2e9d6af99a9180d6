"""The Fréchet distance between two Gaussians fitted to feature sets (FID, Heusel et al. 2017; FVD,
Unterthiner et al. 2018), in float64.

``d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)``. The trace of the matrix square root is computed
from the eigenvalues of ``Σ₁^½ Σ₂ Σ₁^½`` (symmetric positive semi-definite, so its eigenvalues are
real and ≥ 0 up to rounding), which stays finite for singular covariances (fewer samples than
feature dimensions) where a general ``sqrtm`` goes complex.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``features [N, D]`` → ``(mean [D], covariance [D, D])`` in float64 (unbiased, N − 1)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of a symmetric PSD matrix, eigenvalues below the numerical-rank
    tolerance ``max |λ| · D · eps`` set to 0: rounding leaves ±1e-13-sized values in the null space
    of a rank-deficient covariance, and their square roots would add up to ~1e-4."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    tol = np.abs(w).max(initial=0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0), v


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = _psd_eigh(sigma)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance of ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(_psd_eigh(inner)[0]).sum()
    diff = mu1 - mu2
    # d² ≥ 0; what is left below 0 is rounding (~1e-12 of the traces), so print 0, not -0.0000
    return max(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt), 0.0)


def frechet_distance_of(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance of two feature sets ``[N, D]``, ``[M, D]``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
