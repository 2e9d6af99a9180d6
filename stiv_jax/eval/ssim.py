"""SSIM (Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity"),
a per-image frame metric for paired images (e.g. the views of the multi-view application).

Protocol, pinned: uint8 RGB pixels as float64 in [0, 255] (data range L = 255); Gaussian window
σ = 1.5 truncated at 3.5σ (radius 5, 11×11, as Wang et al.), filtered with
``scipy.ndimage.gaussian_filter(mode="reflect")``; K1 = 0.01, K2 = 0.03 (C1 = (K1·L)², C2 = (K2·L)²);
population (not sample) local covariances; each colour channel separately; the SSIM map is averaged
over the interior pixels (a 5-pixel border, the window radius, is cropped from each side), then over
the three channels. This is exactly ``skimage.metrics.structural_similarity(x, y, channel_axis=-1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)`` (scikit-image 0.26).
"""

from __future__ import annotations

from typing import Any

import chex
import numpy as np
from scipy import ndimage

DATA_RANGE = 255.0
SIGMA = 1.5
TRUNCATE = 3.5
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # scipy.ndimage's radius for this sigma/truncate: 5
WIN_SIZE = 2 * RADIUS + 1  # 11
K1, K2 = 0.01, 0.03

PROTOCOL: dict[str, Any] = {
    "metric": "ssim",
    "reference": "Wang et al. 2004, Image quality assessment: from error visibility to structural similarity",
    "input": "uint8 RGB images [..., H, W, 3], H, W >= 11; float64 in [0, 255], data range 255",
    "window": "Gaussian sigma=1.5 truncated at 3.5 sigma (11x11), scipy.ndimage reflect padding",
    "constants": "K1=0.01, K2=0.03; population covariance",
    "average": "mean over the interior (5-pixel border cropped) of each channel's SSIM map, then over channels",
    "equivalent": "skimage.metrics.structural_similarity(channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)",
}


def _filter(x: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean over the H, W axes of ``[..., H, W, C]``."""
    return ndimage.gaussian_filter(x, SIGMA, mode="reflect", truncate=TRUNCATE, axes=(-3, -2))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM of each pair of uint8 RGB images ``[..., H, W, 3]``: float64, shape ``a.shape[:-3]``."""
    chex.assert_equal_shape([a, b])
    chex.assert_rank(a, set(range(3, max(a.ndim, 3) + 1)))  # rank >= 3: [..., H, W, 3]
    chex.assert_axis_dimension(a, -1, 3)
    chex.assert_type([a, b], [np.uint8, np.uint8])
    height, width = a.shape[-3:-1]
    if height < WIN_SIZE or width < WIN_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE} pixels (its window); got {height}x{width}"
        )
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    mu_x, mu_y = _filter(x), _filter(y)
    var_x = _filter(x * x) - mu_x * mu_x
    var_y = _filter(y * y) - mu_y * mu_y
    cov_xy = _filter(x * y) - mu_x * mu_y
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    interior = ssim_map[..., RADIUS : height - RADIUS, RADIUS : width - RADIUS, :]
    return interior.mean(axis=(-3, -2)).mean(axis=-1)
