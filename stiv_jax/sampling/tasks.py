"""STIV sampling tasks: which latent frames are given, and pixels in → video out (paper §2.3, §5).

The tasks and their given frames are ``stiv_jax.flow.task_table``, shared with training.

Given images go through the autoencoder (``ae.encode`` frames [B, G, H, W, 3] in [-1, 1] →
latents, one latent frame per frame, as STIV's per-frame VAE and ``PixelAutoencoder``); the
sample is decoded with ``ae.decode``. ``long`` (keyframes then interpolation) is in ``long.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import chex
import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.flow.task_table import given_frame_indices
from stiv_jax.model.micro import micro_conditions
from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import Cond, Guidance
from stiv_jax.sampling.sampler import Model, sample


class Autoencoder(Protocol):
    """The VAE interface (``vae/pixel.py``): per-frame encode/decode, channels-last."""

    latent_channels: int
    downsample: int

    def encode(self, frames: jax.Array) -> jax.Array: ...

    def decode(self, latents: jax.Array) -> jax.Array: ...


def gaussian_noise(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Standard normal float32 noise of ``shape``, drawn flat and reshaped.

    Same distribution as ``jax.random.normal(rng, shape)``, but with jax 0.10's partitionable
    threefry a rank-4/5 shape took 10-23 s to compile on CPU, against ~1 s flat (measured).
    """
    return jax.random.normal(rng, (int(np.prod(shape)),), jnp.float32).reshape(shape)


def default_micro(batch: int, height: int, width: int, num_frames: int, frame_stride: int = 1) -> jax.Array:
    """Sampling micro-conditions ``[B, len(MICRO_FIELDS)]``: the full frame, no crop."""
    row = micro_conditions(orig_h=height, orig_w=width, frame_stride=frame_stride, num_frames=num_frames)
    return jnp.broadcast_to(jnp.asarray(row), (batch, row.size))


def latent_shape(ae: Autoencoder, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
    """Shape of the latents for a [B, T, H, W, 3] video."""
    if height % ae.downsample or width % ae.downsample:
        raise ValueError(f"{height}x{width} is not divisible by the autoencoder's downsample={ae.downsample}")
    return (batch, num_frames, height // ae.downsample, width // ae.downsample, ae.latent_channels)


def encode_frame_condition(
    ae: Autoencoder, images: jax.Array | None, indices: Sequence[int], noise: jax.Array
) -> FrameCondition:
    """Encodes ``images`` [B, G, H, W, 3] and places them at ``indices`` of the clip."""
    if not indices:
        return FrameCondition.none(noise)
    if images is None:
        raise ValueError(f"{len(indices)} conditioning frame(s) needed, got images=None")
    chex.assert_rank(images, 5)
    given = ae.encode(jnp.asarray(images, jnp.float32))
    chex.assert_shape(given, (noise.shape[0], len(indices), *noise.shape[2:]))
    return FrameCondition.from_given(given, tuple(indices), noise)


def with_micro(cond: Cond, batch: int, height: int, width: int, num_frames: int, frame_stride: int) -> dict:
    """``cond`` with ``micro`` filled in by :func:`default_micro` when absent."""
    cond = dict(cond)
    if "micro" not in cond:
        cond["micro"] = default_micro(batch, height, width, num_frames, frame_stride)
    return cond


def decode(ae: Autoencoder, latents: jax.Array) -> jax.Array:
    """Latents → pixels in [-1, 1]."""
    return jnp.clip(ae.decode(latents), -1.0, 1.0)


def generate(
    model: Model,
    ae: Autoencoder,
    rng: jax.Array,
    *,
    task: str,
    cond: Cond,
    null_cond: Cond | None,
    num_frames: int,
    height: int,
    width: int,
    times: np.ndarray,
    images: jax.Array | None = None,
    num_given: int | None = None,
    frame_stride: int = 1,
    guidance: Guidance = Guidance(),
    solver: str = "euler",
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs one task; returns (video [B, T, H, W, 3] in [-1, 1], latents [B, T, h, w, C]).

    ``images`` [B, G, H, W, 3] are the given frames in order (ti2v: the first frame; predict: the
    first k; interpolate: first and last; upsample: the low-frame-rate clip, ceil(T/2) frames).
    ``cond['micro']`` defaults to :func:`default_micro` with ``frame_stride``. ``noise``: the
    initial state (t = 0) ``[B, T, h, w, C]``; default: drawn from ``rng``.
    """
    batch = cond["text"].shape[0]
    indices = given_frame_indices(task, num_frames, num_given)
    shape = latent_shape(ae, batch, num_frames, height, width)
    if noise is None:
        noise = gaussian_noise(rng, shape)
    chex.assert_shape(noise, shape)
    noise = jnp.asarray(noise, jnp.float32)
    frames = encode_frame_condition(ae, images, indices, noise)
    cond = with_micro(cond, batch, height, width, num_frames, frame_stride)
    latents = sample(model, noise, cond, null_cond, times, frames=frames, guidance=guidance, solver=solver)
    return decode(ae, latents), latents
