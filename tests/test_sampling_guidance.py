"""Guidance identities, the frame-condition rule per branch, renorm, and one batched call."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.bench import standin
from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import Guidance, guided_velocity, renormalize
from stiv_jax.sampling.tasks import default_micro

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
