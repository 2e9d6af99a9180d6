"""AutoencoderKL parity against diffusers (random init, small configs, float32) and the frame API."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install stiv_jax[torch]")
diffusers = pytest.importorskip("diffusers", reason="parity tests need the torch extra")

from stiv_jax.encoders.build import build_autoencoder, from_spec  # noqa: E402
from stiv_jax.errors import ConfigError  # noqa: E402
from stiv_jax.export.diffusers_parts import STIVPixelAutoencoder  # noqa: E402
from stiv_jax.vae import AutoencoderKLConfig, FrameAutoencoder, PixelAutoencoder  # noqa: E402
from stiv_jax.vae.convert import convert_vae  # noqa: E402
from stiv_jax.weights.torch_state import ConversionError  # noqa: E402

RTOL = 1e-4


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


SMALL = dict(
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
)
CONFIGS = {
    "sd-like-4ch": dict(SMALL, latent_channels=4),
    "sd3-like-16ch": dict(
        SMALL,
        latent_channels=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    ),
}


def _diffusers_vae(name: str):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**CONFIGS[name]).eval()
    # diffusers zero-inits nothing in the VAE, but make every norm affine non-trivial anyway.
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return vae


@functools.cache
def converted(name: str):
    vae = _diffusers_vae(name)
    cfg = AutoencoderKLConfig.resolve(dict(vae.config))
    sd = {k: v.numpy().copy() for k, v in vae.state_dict().items()}
    return vae, cfg, convert_vae(sd, cfg)


@pytest.fixture(params=sorted(CONFIGS))
def pair(request):
    return converted(request.param)


def test_encode_decode_match_diffusers(pair):
    vae, cfg, model = pair
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 24, 3)).astype(np.float32)
    mean, logvar = jax.jit(lambda m, x: m.encode(x))(model, x)
    with torch.no_grad():
        post = vae.encode(nchw(x)).latent_dist
        z = torch.from_numpy(np.random.default_rng(1).normal(size=post.mean.shape).astype(np.float32))
        dec = vae.decode(z).sample
    assert mean.shape == (2, 16, 12, cfg.latent_channels)
    assert max_rel_err(mean, nhwc(post.mean)) <= RTOL
    assert max_rel_err(logvar, nhwc(post.logvar)) <= RTOL
    ours = jax.jit(lambda m, z: m.decode(z))(model, nhwc(z))
    assert max_rel_err(ours, nhwc(dec)) <= RTOL


def test_frame_autoencoder_scales_and_chunks_frames():
    _, cfg, model = converted("sd3-like-16ch")  # has both a scaling and a shift factor
    video = np.random.default_rng(2).uniform(-1, 1, (2, 3, 16, 16, 3)).astype(np.float32)
    frames = video.reshape(6, 16, 16, 3)
    mean, logvar = jax.jit(lambda m, x: m.encode(x))(model, frames)
    ae = FrameAutoencoder(model, chunk_size=4)  # 6 frames → chunks of 4, the last one padded
    assert (ae.latent_channels, ae.downsample) == (16, 2)
    lat = ae.encode(video)
    assert lat.shape == (2, 3, 8, 8, 16)
    expected = (mean - cfg.shift_factor) * cfg.scaling_factor
    np.testing.assert_allclose(lat.reshape(6, 8, 8, 16), expected, rtol=1e-5, atol=1e-5)
    out = ae.decode(lat)
    assert out.shape == video.shape
    np.testing.assert_allclose(
        out.reshape(6, 16, 16, 3), jax.jit(lambda m, z: m.decode(z))(model, mean), rtol=1e-4, atol=1e-4
    )
    key = jax.random.key(0)
    eps = jax.random.normal(key, mean.reshape(2, 3, 8, 8, 16).shape)
    draw = (
        mean.reshape(eps.shape) + jnp.exp(0.5 * logvar.reshape(eps.shape)) * eps - cfg.shift_factor
    ) * cfg.scaling_factor
    np.testing.assert_allclose(ae.sample(video, key), draw, rtol=1e-5, atol=1e-5)


def test_legacy_attention_names_and_bad_keys():
    vae = _diffusers_vae("sd-like-4ch")
    cfg = AutoencoderKLConfig.resolve(dict(vae.config))
    sd = {k: v.numpy().copy() for k, v in vae.state_dict().items()}
    legacy = {}
    for k, v in sd.items():  # pre-0.14 names with 1x1-conv shaped attention weights
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".{new}." in k:
                k, v = k.replace(f".{new}.", f".{old}."), (v[:, :, None, None] if v.ndim == 2 else v)
        legacy[k] = v
    a = jax.tree.leaves(convert_vae(legacy, cfg))
    b = jax.tree.leaves(convert_vae(sd, cfg))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    bad = dict(sd)
    bad["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"] = np.zeros((16, 31, 1, 1), np.float32)
    with pytest.raises(
        ConversionError, match=r"decoder\.up_blocks\.1\.resnets\.0\.conv_shortcut\.weight: torch shape \(16, 31, 1, 1\)"
    ):
        convert_vae(bad, cfg)
    bad = {k: v for k, v in sd.items() if not k.startswith("post_quant_conv")}
    with pytest.raises(ConversionError, match=r"missing keys \(2\): post_quant_conv\.bias, post_quant_conv\.weight"):
        convert_vae(bad, cfg)


def test_build_autoencoder_pixel_and_unknown_kind():
    ae = build_autoencoder({"kind": "pixel", "downsample": 2})
    assert isinstance(ae, PixelAutoencoder) and ae.latent_channels == 12 and ae.downsample == 2
    with pytest.raises(ValueError, match="unknown autoencoder kind 'vq'"):
        build_autoencoder({"kind": "vq"})


def test_pixel_autoencoder_standardises_like_a_vae():
    """``(space_to_depth(x) − shift)·scale`` against a numpy space-to-depth; decode inverts it;
    the spec it reports builds it again; bad specs and a KL VAE given a pixel scaling are named."""
    frames = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 6, 3)).astype(np.float32)
    ae = PixelAutoencoder(downsample=2, scaling_factor=2.5, shift_factor=-0.7)
    folded = frames.reshape(2, 3, 4, 2, 3, 2, 3).transpose(0, 1, 2, 4, 3, 5, 6).reshape(2, 3, 4, 3, 12)
    np.testing.assert_allclose(np.asarray(ae.encode(frames)), (folded + 0.7) * 2.5, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae.decode(ae.encode(frames))), frames, atol=1e-6)
    assert ae.spec == "pixel:2:scale=2.5:shift=-0.7" and PixelAutoencoder(2).spec == "pixel:2"
    assert build_autoencoder(from_spec(ae.spec, what="autoencoder")) == ae
    assert build_autoencoder({"kind": "pixel", "downsample": 2, "scaling_factor": 2.5, "shift_factor": -0.7}) == ae
    for spec in ("pixel:2:scale=0", "pixel:2:scale=x", "pixel:2:size=3", "pixel:2:shift=1:shift=2", "pixel:two"):
        with pytest.raises(ConfigError, match=re.escape(f"--autoencoder={spec!r}")):
            from_spec(spec, what="autoencoder")
    exported = STIVPixelAutoencoder(2, scaling_factor=2.5, shift_factor=-0.7)  # the PyTorch export's twin
    latents = exported.encode(torch.from_numpy(frames))
    np.testing.assert_allclose(latents.numpy(), np.asarray(ae.encode(frames)), atol=1e-6)
    np.testing.assert_allclose(exported.decode(latents).numpy(), frames, atol=1e-6)
    with pytest.raises(ConfigError, match="scaling_factor / shift_factor are for kind='pixel'"):
        build_autoencoder({"kind": "kl", "model": "tiny", "scaling_factor": 2.0})
