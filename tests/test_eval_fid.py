"""FID InceptionV3 against torch-fidelity's implementation of the pytorch-fid layout (random weights),
its TF1 / pytorch-fid resizes, and frame-level FID.

pytorch-fid's own module needs torchvision (no CPU build for this PyTorch), so the reference is
torch-fidelity 0.4.0's ``feature_extractor_inceptionv3`` (same network, same state-dict keys),
imported through a stub package because ``torch_fidelity/__init__`` imports torchvision.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install stiv_jax[torch]")

import reference_packages  # noqa: E402

from stiv_jax.eval import fid as fid_lib  # noqa: E402
from stiv_jax.eval import inception as inc  # noqa: E402
from stiv_jax.weights.torch_state import ConversionError, param_shapes  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def torch_fidelity():
    """``import_module("torch_fidelity.<name>")`` without running the package ``__init__`` (which
    imports torchvision): a stub package pointing at the installed folder, removed afterwards."""
    if "torch_fidelity" in sys.modules:  # already imported for real (a machine with torchvision)
        yield lambda name: importlib.import_module(f"torch_fidelity.{name}")
        return
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = [reference_packages.package_dir("torch_fidelity")]
    sys.modules["torch_fidelity"] = stub
    try:
        yield lambda name: importlib.import_module(f"torch_fidelity.{name}")
    finally:
        for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
            del sys.modules[name]


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Torch-layout FID Inception weights: He-scaled convs and near-identity BatchNorms, so features
    stay O(1) through the 94 layers (torch's default init makes them vanish). Includes ``fc``."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(nnx.eval_shape(lambda: inc.InceptionV3(rngs=nnx.Rngs(0))))
    sd = {}
    for rule in inc.inception_rules(sorted(shapes)):
        shape, key = shapes[rule.target], rule.sources[0]
        if rule.target.endswith("kernel"):
            kh, kw, cin, cout = shape
            sd[key] = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), (cout, cin, kh, kw))
        elif rule.target.endswith((".scale", ".var")):
            sd[key] = rng.uniform(0.8, 1.2, shape)
        else:  # bias, mean
            sd[key] = rng.normal(0.0, 0.1, shape)
    sd["fc.weight"], sd["fc.bias"] = rng.normal(0.0, 0.01, (1008, 2048)), np.zeros(1008)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save({k: torch.from_numpy(v) for k, v in random_state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def reference(weights_path, torch_fidelity):
    """torch-fidelity's FeatureExtractorInceptionV3 (strict ``load_state_dict`` checks every key)."""
    module = torch_fidelity("feature_extractor_inceptionv3")
    model = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], weights_path)

    def features(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            (out,) = model(torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))))
        return out.numpy()

    return features


@pytest.fixture(scope="module")
def features(weights_path) -> fid_lib.InceptionFeatures:
    return fid_lib.InceptionFeatures.load(weights_path, batch_size=2)


@pytest.mark.parametrize("size", [(299, 299), (64, 80)])
def test_inception_matches_torch_fidelity(features, reference, size):
    """299² inputs (identity resize) and a smaller input (TF1 bilinear up to 299²)."""
    frames = np.random.default_rng(sum(size)).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    ours = features(frames)
    assert ours.shape == (2, 2048) and ours.dtype == np.float64
    ref = reference(frames)
    assert np.std(ref) > 0.1  # the random network is not degenerate
    assert max_rel_err(ours, ref) <= RTOL


def test_resizes_match_references(torch_fidelity):
    x = np.random.default_rng(0).integers(0, 256, (2, 37, 50, 3)).astype(np.float32)
    tf1 = torch_fidelity("interpolate_compat_tensorflow").interpolate_bilinear_2d_like_tensorflow1x
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    ref = tf1(nchw, size=(299, 299), align_corners=False).numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(inc.resize_bilinear_tf1(jnp.asarray(x), (299, 299)))
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    ref = torch.nn.functional.interpolate(nchw / 255, size=(299, 299), mode="bilinear", align_corners=False)
    ours = np.asarray(inc.preprocess(jnp.asarray(x.astype(np.uint8)), "pytorch-fid"))
    np.testing.assert_allclose(ours, 2 * ref.numpy().transpose(0, 2, 3, 1) - 1, atol=1e-5)
    square = np.full((1, 299, 299, 3), 255, np.uint8)
    assert float(inc.preprocess(jnp.asarray(square), "tf1").max()) == pytest.approx(127 / 128)
    with pytest.raises(ValueError, match="resize"):
        inc.preprocess(jnp.asarray(square), "area")


def test_converter_names_bad_keys():
    sd = random_state_dict()
    del sd["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    sd["Mixed_5b.branch_pool.conv.weight"] = np.zeros((32, 192, 3, 3), np.float32)
    sd["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.zeros((), np.int64)  # ignored, as fc.*
    with pytest.raises(ConversionError) as err:
        inc.convert_inception(sd)
    msg = str(err.value)
    assert "Mixed_6c.branch7x7dbl_3.bn.running_var" in msg and "missing" in msg
    assert "Mixed_5b.branch_pool.conv.weight" in msg and "(1, 1, 192, 32)" in msg
    assert "fc." not in msg and "num_batches_tracked" not in msg


def test_frame_fid(features):
    rng = np.random.default_rng(5)
    real = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    fake = np.clip(real.astype(np.int16) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    frames = fid_lib.frames_of(real)
    assert frames.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(frames[1], real[0, 1])
    np.testing.assert_array_equal(frames[2], real[1, 0])
    real_f = features(frames)
    scale = np.trace(np.cov(real_f, rowvar=False))
    assert abs(fid_lib.fid(real_f, real_f)) <= 1e-4 * scale  # eigenvalue rounding of a rank-3 covariance
    assert fid_lib.frame_fid(real, fake, features) > 1e-2 * scale
    assert features.protocol == fid_lib.PROTOCOL
    assert "F.interpolate" in fid_lib.InceptionFeatures(features.model, resize="pytorch-fid").protocol["resize"]
