"""Long-video generation: keyframes, then interpolation between each pair (paper §5, App. J).

STIV trains two modes into one model and changes the image and micro conditions between them:

1. **Keyframes**: K frames at a large stride (T2V, or TI2V when a first image is given), with
   micro-condition ``frame_stride = (T − 1) · small_stride``.
2. **Interpolation**: for each consecutive keyframe pair, a T-frame clip at ``small_stride`` with
   the pair as its first and last frames (the ``interpolate`` task at the training length T, so
   it patchifies with temporal patch 2); the clip spans T − 1 strides, hence the keyframe stride.

Output: the K − 1 clips concatenated, **(K − 1) · T frames** — the paper's count, (20 − 1) × 20 =
380 for K = T = 20 (each inner keyframe ends one clip and starts the next, so it appears twice,
as consecutive frames). All K − 1 interpolation clips run as one batch of B·(K − 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import TEXT_KEYS, Cond, Guidance
from stiv_jax.sampling.sampler import Model, sample
from stiv_jax.sampling.tasks import (
    Autoencoder,
    decode,
    default_micro,
    encode_frame_condition,
    gaussian_noise,
    latent_shape,
)


def num_long_frames(num_keyframes: int, segment_frames: int) -> int:
    """Frames produced by :func:`generate_long`: (K − 1) · T."""
    return (num_keyframes - 1) * segment_frames


def _text_only(cond: Cond) -> dict:
    return {k: v for k, v in cond.items() if k != "micro"}


def sample_keyframes(
    model: Model,
    ae: Autoencoder,
    rng: jax.Array,
    *,
    cond: Cond,
    null_cond: Cond | None,
    height: int,
    width: int,
    times: np.ndarray,
    num_keyframes: int,
    segment_frames: int,
    small_stride: int = 1,
    first_image: jax.Array | None = None,
    guidance: Guidance = Guidance(),
    solver: str = "euler",
) -> jax.Array:
    """Keyframe latents [B, K, h, w, C] at stride (T − 1)·small_stride (TI2V if ``first_image``)."""
    if num_keyframes < 2:
        raise ValueError(f"long video needs num_keyframes >= 2, got {num_keyframes}")
    batch = cond["text"].shape[0]
    noise = gaussian_noise(rng, latent_shape(ae, batch, num_keyframes, height, width))
    images = None if first_image is None else jnp.reshape(first_image, (batch, 1, height, width, -1))
    frames = encode_frame_condition(ae, images, (0,) if images is not None else (), noise)
    micro = default_micro(batch, height, width, num_keyframes, (segment_frames - 1) * small_stride)
    return sample(
        model,
        noise,
        {**_text_only(cond), "micro": micro},
        null_cond,
        times,
        frames=frames,
        guidance=guidance,
        solver=solver,
    )


def interpolate_segments(
    model: Model,
    rng: jax.Array,
    keyframes: jax.Array,
    *,
    cond: Cond,
    null_cond: Cond | None,
    height: int,
    width: int,
    times: np.ndarray,
    segment_frames: int,
    small_stride: int = 1,
    guidance: Guidance = Guidance(),
    solver: str = "euler",
) -> jax.Array:
    """A T-frame clip between each keyframe pair; returns latents [B, (K − 1)·T, h, w, C]."""
    if segment_frames < 2:
        raise ValueError(f"segment_frames must be >= 2, got {segment_frames}")
    batch, num_keyframes, *latent = keyframes.shape
    pairs = num_keyframes - 1
    clip = segment_frames
    given = jnp.stack([keyframes[:, :-1], keyframes[:, 1:]], axis=2)  # [B, K-1, 2, ...]
    given = given.reshape(batch * pairs, 2, *latent)
    noise = gaussian_noise(rng, (batch * pairs, clip, *latent)).astype(keyframes.dtype)
    frames = FrameCondition.from_given(given, (0, clip - 1), noise)
    seg_cond = {k: jnp.repeat(v, pairs, axis=0) for k, v in _text_only(cond).items()}
    seg_cond["micro"] = default_micro(batch * pairs, height, width, clip, small_stride)
    if null_cond is not None:  # leading dim 1 broadcasts in guidance; B must be repeated
        null_cond = {
            k: (v if v.shape[0] == 1 else jnp.repeat(v, pairs, axis=0)) for k, v in null_cond.items() if k in TEXT_KEYS
        }
    clips = sample(model, noise, seg_cond, null_cond, times, frames=frames, guidance=guidance, solver=solver)
    return clips.reshape(batch, pairs * clip, *latent)


def generate_long(
    model: Model,
    ae: Autoencoder,
    rng: jax.Array,
    *,
    cond: Cond,
    null_cond: Cond | None,
    height: int,
    width: int,
    times: np.ndarray,
    num_keyframes: int = 20,
    segment_frames: int = 20,
    small_stride: int = 1,
    first_image: jax.Array | None = None,
    guidance: Guidance = Guidance(),
    solver: str = "euler",
) -> tuple[jax.Array, jax.Array]:
    """Long video (module docstring); returns (video [B, (K−1)·T, H, W, 3], latents).

    Micro-conditions are set per pass (``cond['micro']`` is ignored); ``first_image``
    [B, H, W, 3] makes the keyframe pass TI2V.
    """
    key_rng, seg_rng = jax.random.split(rng)
    keyframes = sample_keyframes(
        model,
        ae,
        key_rng,
        cond=cond,
        null_cond=null_cond,
        height=height,
        width=width,
        times=times,
        num_keyframes=num_keyframes,
        segment_frames=segment_frames,
        small_stride=small_stride,
        first_image=first_image,
        guidance=guidance,
        solver=solver,
    )
    latents = interpolate_segments(
        model,
        seg_rng,
        keyframes,
        cond=cond,
        null_cond=null_cond,
        height=height,
        width=width,
        times=times,
        segment_frames=segment_frames,
        small_stride=small_stride,
        guidance=guidance,
        solver=solver,
    )
    return decode(ae, latents), latents
