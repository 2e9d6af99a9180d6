"""SSIM (stiv_jax/eval/ssim.py) against scikit-image 0.26's ``structural_similarity`` with Wang et al.'s
settings, plus checks that need no reference: identity, constant images, symmetry, input guards."""

from __future__ import annotations

import numpy as np
import pytest
import reference_packages
from scipy import ndimage

from stiv_jax.eval import ssim as ssim_lib

ATOL = 1e-9
C1 = (0.01 * 255) ** 2


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    metrics = reference_packages.import_reference("skimage.metrics")
    return metrics.structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gradient(h: int, w: int, shift: int = 0) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(h), np.arange(w) + shift, indexing="ij")
    img = np.stack([2 * yy + xx, 255 * np.sin(xx / 7.0) ** 2, 4 * xx - yy + 60], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _blurred(img: np.ndarray) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(img.astype(np.float64), (1.2, 1.2, 0))).astype(np.uint8)


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    noise = _noise(rng, 24, 24)
    textured = _noise(rng, 64, 48)
    return {
        "noise-24x24": (noise, _noise(rng, 24, 24)),
        "noise-64x48": (textured, _noise(rng, 64, 48)),
        "noise-plus-perturbation": (
            textured,
            np.clip(textured + rng.integers(-20, 21, textured.shape), 0, 255).astype(np.uint8),
        ),
        "gradient-shifted": (_gradient(64, 48), _gradient(64, 48, shift=3)),
        "blurred-24x24": (noise, _blurred(noise)),
        "blurred-64x48": (textured, _blurred(textured)),
        "constant": (np.full((24, 24, 3), 30, np.uint8), np.full((24, 24, 3), 200, np.uint8)),
        "constant-vs-noise": (np.full((24, 24, 3), 128, np.uint8), noise),
        "minimum-11x11": (_noise(rng, 11, 11), _noise(rng, 11, 11)),
        "minimum-11x17": (_gradient(11, 17), _gradient(11, 17, shift=2)),
    }


@pytest.mark.parametrize("name", list(_pairs()))
def test_matches_skimage(name):
    a, b = _pairs()[name]
    got = ssim_lib.ssim(a, b)
    assert got.shape == () and got.dtype == np.float64
    np.testing.assert_allclose(got, _skimage_ssim(a, b), rtol=0, atol=ATOL)


def test_batch_matches_per_image_skimage():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 3, 20, 26, 3), dtype=np.uint8)
    b = np.where(rng.random(a.shape) < 0.5, a, rng.integers(0, 256, a.shape)).astype(np.uint8)
    b[1, 2] = a[1, 2]  # one identical pair in the batch
    got = ssim_lib.ssim(a, b)
    assert got.shape == (2, 3)
    want = np.array([[_skimage_ssim(a[i, j], b[i, j]) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert abs(got[1, 2] - 1.0) < 1e-12


@pytest.mark.parametrize("shape", [(11, 11, 3), (24, 24, 3), (3, 64, 48, 3)])
def test_identical_images_score_one(shape):
    x = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_allclose(ssim_lib.ssim(x, x), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mu_a, mu_b", [(30, 200), (0, 255), (128, 127), (0, 0), (255, 255)])
def test_constant_images_closed_form(mu_a, mu_b):
    a = np.full((16, 20, 3), mu_a, np.uint8)
    b = np.full((16, 20, 3), mu_b, np.uint8)
    want = (2 * mu_a * mu_b + C1) / (mu_a**2 + mu_b**2 + C1)  # no variance: only the luminance term remains
    np.testing.assert_allclose(ssim_lib.ssim(a, b), want, rtol=0, atol=1e-12)


def test_symmetric():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (4, 24, 30, 3), dtype=np.uint8)
    b = _blurred(a[0])[None] // np.array([1, 2, 3, 4], np.uint8)[:, None, None, None]
    np.testing.assert_allclose(ssim_lib.ssim(a, b), ssim_lib.ssim(b, a), rtol=0, atol=1e-12)


@pytest.mark.parametrize("h, w", [(10, 11), (11, 10), (5, 40)])
def test_too_small_raises(h, w):
    x = np.zeros((2, h, w, 3), np.uint8)
    with pytest.raises(ValueError, match=f"got {h}x{w}"):
        ssim_lib.ssim(x, x)


def test_bad_inputs_raise():
    x = np.zeros((24, 24, 3), np.uint8)
    with pytest.raises(AssertionError):
        ssim_lib.ssim(x, np.zeros((24, 25, 3), np.uint8))  # mismatched shapes
    with pytest.raises(AssertionError):
        ssim_lib.ssim(x[None], x)  # mismatched ranks
    with pytest.raises(AssertionError):
        ssim_lib.ssim(x[..., 0], x[..., 0])  # rank 2
    with pytest.raises(AssertionError):
        ssim_lib.ssim(np.zeros((24, 24, 4), np.uint8), np.zeros((24, 24, 4), np.uint8))  # not RGB
    with pytest.raises(AssertionError):
        ssim_lib.ssim(x.astype(np.float32), x.astype(np.float32))  # not uint8
