"""Sampling tasks: given frames stay fixed at every step, pixels round-trip, long video count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stiv_jax.bench import standin
from stiv_jax.sampling import long, schedules, tasks
from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import Guidance
from stiv_jax.sampling.sampler import sample
from stiv_jax.vae.pixel import PixelAutoencoder

B, H, W = 2, 8, 8
AE = PixelAutoencoder(downsample=2)  # latents [B, T, 4, 4, 12]
TIMES = schedules.linear_quadratic(4, 10)
PARAMS = standin.init(0, channels=AE.latent_channels, text_dim=16, width=32, depth=1)
MODEL = functools.partial(standin.apply, PARAMS)  # one object: compiled programs are reused
COND, NULL = standin.example_conditions(1, B)


def pixels(num_frames, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-1, 1, (B, num_frames, H, W, 3)), jnp.float32)


def test_given_frame_indices():
    assert tasks.given_frame_indices("t2v", 5) == ()
    assert tasks.given_frame_indices("t2i", 1) == ()
    assert tasks.given_frame_indices("ti2v", 5) == (0,)
    assert tasks.given_frame_indices("predict", 6) == (0, 1, 2, 3)
    assert tasks.given_frame_indices("predict", 6, 2) == (0, 1)
    assert tasks.given_frame_indices("interpolate", 5) == (0, 4)
    assert tasks.given_frame_indices("upsample", 5) == (0, 2, 4)
    for bad in [("t2i", 2, None), ("predict", 4, 4), ("interpolate", 2, None), ("long", 9, None)]:
        with pytest.raises(ValueError):
            tasks.given_frame_indices(*bad)


def test_default_micro():
    micro = tasks.default_micro(3, 256, 512, 16, 2)
    assert micro.shape == (3, 6) and micro.dtype == jnp.float32
    np.testing.assert_array_equal(micro[2], [256, 512, 0, 0, 2, 16])


@pytest.mark.parametrize("task,num_given", [("ti2v", None), ("predict", 2), ("interpolate", None), ("upsample", None)])
def test_given_frames_unchanged_at_every_step(task, num_given):
    num_frames = 5
    indices = tasks.given_frame_indices(task, num_frames, num_given)
    noise = tasks.gaussian_noise(jax.random.key(2), tasks.latent_shape(AE, B, num_frames, H, W))
    frames = tasks.encode_frame_condition(AE, pixels(len(indices)), indices, noise)
    cond = tasks.with_micro(COND, B, H, W, num_frames, 1)
    x1, traj = sample(
        MODEL,
        noise,
        cond,
        NULL,
        TIMES,
        frames=frames,
        guidance=Guidance(kind="jit", renorm="rescale"),
        solver="heun",
        return_trajectory=True,
    )
    given = AE.encode(pixels(len(indices)))
    idx, free = list(indices), [i for i in range(num_frames) if i not in indices]
    assert traj.shape == (len(TIMES), *noise.shape)
    np.testing.assert_array_equal(traj[:, :, idx], jnp.broadcast_to(given, traj[:, :, idx].shape))
    np.testing.assert_array_equal(traj[0][:, free], noise[:, free])  # others start at the noise
    assert jnp.all(jnp.abs(x1[:, free] - noise[:, free]).max(axis=(2, 3, 4)) > 0.1)


@pytest.mark.parametrize(
    "task,num_frames,given_frames", [("ti2v", 3, [0]), ("interpolate", 3, [0, 2]), ("t2v", 3, []), ("t2i", 1, [])]
)
def test_generate_round_trips_given_images(task, num_frames, given_frames):
    images = pixels(len(given_frames), seed=3) if given_frames else None
    video, latents = tasks.generate(
        MODEL,
        AE,
        jax.random.key(4),
        task=task,
        cond=COND,
        null_cond=NULL,
        num_frames=num_frames,
        height=H,
        width=W,
        times=TIMES,
        images=images,
        guidance=Guidance(kind="cfg"),
    )
    assert video.shape == (B, num_frames, H, W, 3)
    assert latents.shape == tasks.latent_shape(AE, B, num_frames, H, W)
    assert jnp.all(jnp.abs(video) <= 1.0) and jnp.all(jnp.isfinite(video))
    if given_frames:
        np.testing.assert_array_equal(video[:, given_frames], images)
    with pytest.raises(ValueError, match="images=None"):
        if given_frames:
            tasks.generate(
                MODEL,
                AE,
                jax.random.key(4),
                task=task,
                cond=COND,
                null_cond=NULL,
                num_frames=num_frames,
                height=H,
                width=W,
                times=TIMES,
            )
        else:
            raise ValueError("images=None (nothing to check for unconditioned tasks)")


def test_scales_and_schedule_do_not_recompile():
    traces = []

    def model_fn(x, t, cond):
        traces.append(x.shape)
        return MODEL(x, t, cond)

    noise = jnp.ones(tasks.latent_shape(AE, B, 3, H, W))
    cond = tasks.with_micro(COND, B, H, W, 3, 1)
    a = sample(model_fn, noise, cond, NULL, TIMES, guidance=Guidance(scale=2.0))
    b = sample(model_fn, noise, cond, NULL, schedules.linear(4), guidance=Guidance(scale=3.0, image_scale=2.0))
    assert len(traces) == 1 and traces[0][0] == 2 * B  # traced once, one batched 2B call
    assert jnp.max(jnp.abs(a - b)) > 1e-3


class TinyDiT(nnx.Module):
    """An nnx.Module with the DiT call convention."""

    def __init__(self, channels, text_dim, rngs):
        self.proj = nnx.Linear(channels, channels, rngs=rngs)
        self.text = nnx.Linear(text_dim, channels, rngs=rngs)

    def __call__(self, x, t, *, text, text_mask, pooled_text, micro, cond_mask=None, keep_idx=None):
        assert keep_idx is None
        bias = self.text(pooled_text) + jnp.sum(text_mask, -1, keepdims=True) + micro[:, :1]
        h = self.proj(x) * t[:, None, None, None, None] + bias[:, None, None, None, :]
        return jnp.tanh(h + cond_mask[:, :, None, None, None])


def test_nnx_module_model():
    module = TinyDiT(AE.latent_channels, 16, nnx.Rngs(0))
    noise = tasks.gaussian_noise(jax.random.key(5), tasks.latent_shape(AE, B, 3, H, W))
    frames = FrameCondition.from_given(noise[:, :1] + 1.0, (0,), noise)
    cond = tasks.with_micro(COND, B, H, W, 3, 1)
    got = sample(module, noise, cond, NULL, TIMES, frames=frames, guidance=Guidance(kind="sit"))
    want = sample(
        lambda x, t, c: module(x, t, **c), noise, cond, NULL, TIMES, frames=frames, guidance=Guidance(kind="sit")
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_long_video():
    assert long.num_long_frames(20, 20) == 380  # the paper's (20 − 1) × 20
    keyframes_k, segment_t = 3, 3
    kwargs = dict(cond=COND, null_cond=NULL, height=H, width=W, times=TIMES, guidance=Guidance(kind="jit"))
    first = pixels(1, seed=6)[:, 0]
    video, latents = long.generate_long(
        MODEL, AE, jax.random.key(7), num_keyframes=keyframes_k, segment_frames=segment_t, first_image=first, **kwargs
    )
    num = long.num_long_frames(keyframes_k, segment_t)
    assert video.shape == (B, num, H, W, 3) and latents.shape[1] == num
    np.testing.assert_array_equal(video[:, 0], first)  # TI2V keyframe pass
    # Keyframe i starts clip i, at frame i·T of the output (the interpolation pass kept it fixed)
    key_rng, _ = jax.random.split(jax.random.key(7))
    keyframes = long.sample_keyframes(
        MODEL, AE, key_rng, num_keyframes=keyframes_k, segment_frames=segment_t, first_image=first, **kwargs
    )
    np.testing.assert_allclose(latents[:, ::segment_t], keyframes[:, :-1], atol=1e-6)
    # ... and keyframe i + 1 ends clip i (first and last frames of every clip are given).
    np.testing.assert_allclose(latents[:, segment_t - 1 :: segment_t], keyframes[:, 1:], atol=1e-6)
