"""Guidance identities, the frame-condition rule per branch, renorm, frequency-decoupled guidance,
and one batched call."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage

from stiv_jax.bench import standin
from stiv_jax.errors import ConfigError
from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import Guidance, guided_velocity, low_pass, renormalize
from stiv_jax.sampling.options import SampleOptions
from stiv_jax.sampling.tasks import default_micro
from stiv_jax.vae.pixel import PixelAutoencoder, space_to_depth

B, T, H, W, C = 2, 3, 4, 4, 4


@pytest.fixture(scope="module")
def setup():
    params = standin.init(0, channels=C, text_dim=16, width=32, depth=1)
    model_fn = jax.jit(functools.partial(standin.apply, params))
    cond, null_cond = standin.example_conditions(1, B)
    cond["micro"] = default_micro(B, 32, 32, T, 2)
    rng = np.random.default_rng(0)
    noise, clean, state = (jnp.asarray(rng.standard_normal((B, n, H, W, C)), jnp.float32) for n in (T, 1, T))
    frames = FrameCondition.from_given(clean, (0,), noise)
    x = frames.replace(state)  # a mid-trajectory state
    return model_fn, cond, null_cond, frames, x


@functools.partial(jax.jit, static_argnums=0)
def _jit_velocity(model_fn, x, cond, null_cond, frames, guidance):
    return guided_velocity(model_fn, x, jnp.float32(0.3), cond, null_cond, frames, guidance)


def velocity(setup, frames=None, **kwargs):
    model_fn, cond, null_cond, given, x = setup
    frames = given if frames is None else frames
    return _jit_velocity(model_fn, x, cond, null_cond, frames, Guidance(**kwargs))


def branch(setup, with_text, with_image, t=0.3, null_image="noise"):
    """F(text, image) built by hand from the documented rule (independent of guidance.py)."""
    model_fn, cond, null_cond, frames, x = setup
    c = dict(cond)
    if not with_text:
        c.update({k: jnp.broadcast_to(v, (B,) + v.shape[1:]) for k, v in null_cond.items()})
    m = frames.mask[:, :, None, None, None]
    if with_image:
        c["cond_mask"], xb = frames.mask, x
    elif null_image == "zeros":  # multi-view: zero latents, still marked given
        c["cond_mask"], xb = frames.mask, jnp.where(m, 0.0, x)
    else:
        c["cond_mask"] = jnp.zeros_like(frames.mask)
        xb = jnp.where(m, t * frames.latents + (1 - t) * frames.noise, x)
    return jnp.where(m, 0.0, model_fn(xb, jnp.full((B,), t), c))


def test_branches_follow_the_frame_rule(setup):
    # Scale 0 leaves only the reference branch of each formula.
    np.testing.assert_allclose(velocity(setup, kind="jit", scale=0.0), branch(setup, False, False), atol=1e-6)
    np.testing.assert_allclose(velocity(setup, kind="cfg", scale=0.0), branch(setup, False, True), atol=1e-6)
    np.testing.assert_allclose(
        velocity(setup, kind="sit", scale=0.0, image_scale=1.0), branch(setup, False, True), atol=1e-6
    )
    np.testing.assert_allclose(velocity(setup, kind="none"), branch(setup, True, True), atol=1e-6)
    # The branches really differ, so the identities below are not vacuous.
    assert jnp.max(jnp.abs(branch(setup, False, False) - branch(setup, False, True))) > 1e-2
    assert jnp.max(jnp.abs(branch(setup, True, True) - branch(setup, False, True))) > 1e-2


def test_zeros_null_image_branches(setup):
    """A run trained with ``null_image='zeros'`` guides against zero latents at the given frames."""
    for kind, image_branch in (("jit", (False, False)), ("sit", (False, False))):
        got = velocity(setup, kind=kind, scale=0.0, image_scale=0.0, null_image="zeros")
        np.testing.assert_allclose(got, branch(setup, *image_branch, null_image="zeros"), atol=1e-6)
    c, u = branch(setup, True, True), branch(setup, False, False, null_image="zeros")
    np.testing.assert_allclose(velocity(setup, kind="jit", scale=3.5, null_image="zeros"), u + 3.5 * (c - u), atol=1e-5)
    # Not the noise null image: the unconditional branch differs.
    assert jnp.max(jnp.abs(u - branch(setup, False, False))) > 1e-2
    with pytest.raises(ValueError, match="null_image"):
        Guidance(null_image="grey")


def test_guidance_formulas(setup):
    c, i, u = branch(setup, True, True), branch(setup, False, True), branch(setup, False, False)
    np.testing.assert_allclose(velocity(setup, kind="jit", scale=7.5), u + 7.5 * (c - u), atol=1e-5)
    np.testing.assert_allclose(velocity(setup, kind="cfg", scale=4.0), i + 4.0 * (c - i), atol=1e-5)
    np.testing.assert_allclose(
        velocity(setup, kind="sit", scale=7.5, image_scale=1.5), u + 1.5 * (i - u) + 7.5 * (c - i), atol=1e-5
    )


def test_guidance_identities(setup):
    cond_v = velocity(setup, kind="none")
    for kind in ("cfg", "jit"):  # s = 1 is the conditional prediction
        np.testing.assert_allclose(velocity(setup, kind=kind, scale=1.0), cond_v, atol=1e-6)
    np.testing.assert_allclose(velocity(setup, kind="sit", scale=1.0, image_scale=1.0), cond_v, atol=1e-6)
    # SIT with s_img = s_txt = s is JIT with s; SIT with s_img = 1 is text CFG with s_txt.
    np.testing.assert_allclose(
        velocity(setup, kind="sit", scale=5.0, image_scale=5.0), velocity(setup, kind="jit", scale=5.0), atol=1e-5
    )
    np.testing.assert_allclose(
        velocity(setup, kind="sit", scale=5.0, image_scale=1.0), velocity(setup, kind="cfg", scale=5.0), atol=1e-5
    )
    # Without an image JIT-CFG is text CFG (and both differ from the with-image case).
    no_image = FrameCondition.none(setup[3].noise)
    jit_v = velocity(setup, frames=no_image, kind="jit", scale=5.0)
    np.testing.assert_allclose(jit_v, velocity(setup, frames=no_image, kind="cfg", scale=5.0), atol=1e-6)
    assert jnp.max(jnp.abs(jit_v - velocity(setup, kind="jit", scale=5.0))) > 1e-2


def test_given_frames_have_zero_velocity(setup):
    v = velocity(setup, kind="sit")
    np.testing.assert_array_equal(v[:, 0], 0.0)
    assert jnp.all(jnp.abs(v[:, 1:]).max(axis=(1, 2, 3, 4)) > 0)


def per_sample_norm(v):
    return jnp.sqrt(jnp.sum(v**2, axis=tuple(range(1, v.ndim))))


def test_renorm(setup):
    cond_v = velocity(setup, kind="none")
    plain = velocity(setup, kind="jit", scale=7.5)
    rescaled = velocity(setup, kind="jit", scale=7.5, renorm="rescale")
    np.testing.assert_allclose(per_sample_norm(rescaled), per_sample_norm(cond_v), rtol=1e-5)
    ratio = per_sample_norm(plain) / per_sample_norm(rescaled)  # same direction per sample
    np.testing.assert_allclose(rescaled * ratio[:, None, None, None, None], plain, rtol=1e-4, atol=1e-5)
    # clip only ever scales down: a large guided norm is clipped to the conditional norm, a
    # small one is kept; rescale scales it up.
    big, small = 3.0 * cond_v, 0.5 * cond_v
    np.testing.assert_allclose(renormalize(big, cond_v, "clip"), cond_v, rtol=1e-5)
    np.testing.assert_array_equal(renormalize(small, cond_v, "clip"), small)
    np.testing.assert_allclose(renormalize(small, cond_v, "rescale"), cond_v, rtol=1e-5)
    mixed = jnp.concatenate([big[:1], small[1:]])  # per sample, not over the batch
    np.testing.assert_allclose(renormalize(mixed, cond_v, "clip"), jnp.concatenate([cond_v[:1], small[1:]]), rtol=1e-5)


@pytest.mark.parametrize("kind,branches", [("none", 1), ("cfg", 2), ("jit", 2), ("sit", 3)])
def test_one_batched_model_call(setup, kind, branches):
    model_fn, cond, null_cond, frames, x = setup
    calls = []

    def counting(xb, t, c):
        calls.append((xb.shape[0], t.shape, {k: v.shape[0] for k, v in c.items()}))
        return model_fn(xb, t, c)

    guided_velocity(counting, x, jnp.float32(0.5), cond, null_cond, frames, Guidance(kind=kind))
    n = branches * B
    assert calls == [(n, (n,), dict.fromkeys(("text", "text_mask", "pooled_text", "micro", "cond_mask"), n))]


def test_null_cond_batch_and_errors(setup):
    model_fn, cond, null_cond, frames, x = setup
    full = {k: jnp.repeat(v, B, axis=0) for k, v in null_cond.items()}
    np.testing.assert_allclose(
        guided_velocity(model_fn, x, 0.3, cond, full, frames, Guidance()),
        guided_velocity(model_fn, x, 0.3, cond, null_cond, frames, Guidance()),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="null_cond"):
        guided_velocity(model_fn, x, 0.3, cond, None, frames, Guidance(kind="jit"))
    guided_velocity(model_fn, x, 0.3, cond, None, frames, Guidance(kind="none"))
    with pytest.raises(ValueError, match="unknown guidance"):
        Guidance(kind="apg")
    with pytest.raises(ValueError, match="unknown renorm"):
        Guidance(renorm="l1")


def scipy_low_pass(x, sigma, f):
    """FDG's low-pass from scipy, independent of guidance.low_pass: the f×f pixel blocks of each
    latent unfolded by hand, ``gaussian_filter`` over each frame with the edge pixels repeated."""
    b, t, h, w, cf = x.shape
    c = cf // (f * f)
    pixels = np.asarray(x, np.float64).reshape(b, t, h, w, f, f, c).transpose(0, 1, 2, 4, 3, 5, 6)
    pixels = pixels.reshape(b, t, h * f, w * f, c)
    smooth = scipy.ndimage.gaussian_filter(pixels, sigma=(0, 0, sigma, sigma, 0), mode="nearest", truncate=3.0)
    return smooth.reshape(b, t, h, f, w, f, c).transpose(0, 1, 2, 4, 3, 5, 6).reshape(x.shape)


@pytest.mark.parametrize("sigma,f", [(1.0, 1), (2.0, 1), (1.0, 2), (2.0, 2), (1.5, 3)])
def test_low_pass_is_a_gaussian_blur_of_the_pixels(sigma, f):
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5, 3 * f * f)).astype(np.float32)
    np.testing.assert_allclose(low_pass(jnp.asarray(x), sigma, f), scipy_low_pass(x, sigma, f), atol=1e-5)
    # The pixel view matters: blurring the latent grid per channel is another filter.
    if f > 1:
        assert np.abs(scipy_low_pass(x, sigma, 1) - scipy_low_pass(x, sigma, f)).max() > 0.1


def test_low_pass_keeps_flat_frames_and_removes_the_finest_pattern():
    flat = jnp.full((1, 2, 6, 6, 12), 0.7, jnp.float32)
    np.testing.assert_allclose(low_pass(flat, 2.0, 2), flat, rtol=1e-6)
    # A one-pixel checkerboard (the pixel autoencoder's sub-pixels, alternating) is gone inside the frame.
    checker = np.indices((12, 12)).sum(0) % 2 * 2.0 - 1.0
    latents = space_to_depth(jnp.asarray(np.broadcast_to(checker[..., None], (1, 1, 12, 12, 3))), 2)
    assert np.abs(latents).min() == 1.0
    assert np.abs(low_pass(latents, 2.0, 2)[:, :, 2:-2, 2:-2]).max() < 1e-3


def test_frequency_decoupled_guidance(setup):
    """The low frequencies get the scale s, the high ones h (Sadat et al. 2025), per branch formula."""
    c, i, u = branch(setup, True, True), branch(setup, False, True), branch(setup, False, False)
    fdg = dict(high_scale=0.5, split_sigma=1.0, subpixels=2)
    for kind, ref in (("jit", u), ("cfg", i)):
        delta = c - ref
        expected = ref + 0.5 * delta + (3.0 - 0.5) * scipy_low_pass(delta, 1.0, 2)
        got = velocity(setup, kind=kind, scale=3.0, **fdg)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert jnp.max(jnp.abs(got - velocity(setup, kind=kind, scale=3.0))) > 1e-2  # not plain guidance
    # SIT: its formula on the low frequencies, JIT-CFG with h on the high ones.
    plain_sit = u + 1.5 * (i - u) + 3.0 * (c - i)
    high = u + 0.5 * (c - u)
    expected = high + scipy_low_pass(plain_sit - high, 1.0, 2)
    got = velocity(setup, kind="sit", scale=3.0, image_scale=1.5, **fdg)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got[:, 0], 0.0)  # given frames stay given


def test_frequency_decoupled_guidance_identities(setup):
    for kind in ("cfg", "jit"):  # h = s is plain guidance, bit for bit
        np.testing.assert_array_equal(
            velocity(setup, kind=kind, scale=4.0, high_scale=4.0, subpixels=2), velocity(setup, kind=kind, scale=4.0)
        )
    # SIT with s_img = s_txt = s and h is JIT-CFG with s and h.
    fdg = dict(scale=5.0, high_scale=2.0, split_sigma=1.5)
    np.testing.assert_allclose(
        velocity(setup, kind="sit", image_scale=5.0, **fdg), velocity(setup, kind="jit", **fdg), atol=1e-5
    )


@pytest.mark.parametrize(
    "settings,flag",
    [
        (dict(high_scale=float("nan")), "--high_scale"),
        (dict(high_scale=-2e3), "--high_scale"),
        (dict(split_sigma=0.0), "--split_sigma"),
        (dict(split_sigma=float("inf")), "--split_sigma"),
    ],
)
def test_bad_frequency_decoupled_settings_are_named(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        Guidance(**settings).check_scales()


def test_the_run_decides_the_null_image_and_the_pixel_blocks():
    config = ml_collections.ConfigDict(dict(null_image="zeros", sampling=dict(high_scale=1.0, split_sigma=1.5)))
    options = SampleOptions.for_run(config)
    guidance = options.run_guidance(config, PixelAutoencoder(downsample=2))
    assert (guidance.null_image, guidance.subpixels, guidance.high_scale, guidance.split_sigma) == (
        "zeros",
        2,
        1.0,
        1.5,
    )
    assert options.run_guidance(config, object()).subpixels == 1  # a learned VAE's latents: no pixel blocks
