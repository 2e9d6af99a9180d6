"""Per-frame video ↔ latent interface over the frozen VAE (built from a config by
``stiv_jax.encoders.build.build_autoencoder``).

STIV uses a 2D VAE frame by frame (paper §3.1), so a video ``[B, T, H, W, 3]`` is folded to
``B·T`` images and processed in chunks of ``chunk_size`` frames inside one ``lax.map``, which
bounds activation memory whatever the clip length. Latents are normalised the diffusers way,
``z = (mean − shift_factor) · scaling_factor``, so they have roughly unit variance for the DiT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig


def map_frames(fn: Callable[[jax.Array], Any], x: jax.Array, chunk_size: int) -> Any:
    """Applies ``fn`` (``[n, ...] -> pytree of [n, ...]``) to ``x [N, ...]`` ``chunk_size`` rows at a time."""
    n = x.shape[0]
    chunk = max(1, min(chunk_size, n))
    pad = (-n) % chunk
    xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, chunk, *x.shape[1:])
    ys = jax.lax.map(fn, xs)
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:n], ys)


class FrameAutoencoder(nnx.Module):
    """A frozen :class:`AutoencoderKL` applied per frame to ``[B, T, H, W, C]`` videos.

    An NNX module (hence a pytree): pass it into a jitted function as an argument, or call the
    methods eagerly (they jit themselves). Images are videos with ``T = 1``.
    """

    def __init__(self, model: AutoencoderKL, chunk_size: int = 16):
        self.model = model
        self.chunk_size = int(chunk_size)

    @property
    def config(self) -> AutoencoderKLConfig:
        return self.model.config

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample(self) -> int:
        return self.config.downsample

    def _moments(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(frames, 5)
        b, t = frames.shape[:2]
        mean, logvar = map_frames(self.model.encode, frames.reshape(b * t, *frames.shape[2:]), self.chunk_size)
        return mean.reshape(b, t, *mean.shape[1:]), logvar.reshape(b, t, *logvar.shape[1:])

    def _scale(self, z: jax.Array) -> jax.Array:
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def encode(self, frames: jax.Array) -> jax.Array:
        """``frames [B, T, H, W, 3]`` in [-1, 1] → scaled posterior means ``[B, T, H/f, W/f, C]``."""
        return _encode_jit(self, frames)

    def sample(self, frames: jax.Array, key: jax.Array) -> jax.Array:
        """Like :meth:`encode` but draws ``z = mean + σ·ε`` from the posterior."""
        return _sample_jit(self, frames, key)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Scaled latents ``[B, T, h, w, C]`` → frames ``[B, T, h·f, w·f, 3]`` (float32, ~[-1, 1])."""
        return _decode_jit(self, latents)

    def _encode(self, frames):
        return self._scale(self._moments(frames)[0])

    def _sample(self, frames, key):
        mean, logvar = self._moments(frames)
        return self._scale(mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype))

    def _decode(self, latents):
        chex.assert_rank(latents, 5)
        chex.assert_axis_dimension(latents, 4, self.latent_channels)
        b, t = latents.shape[:2]
        z = latents.reshape(b * t, *latents.shape[2:]) / self.config.scaling_factor + self.config.shift_factor
        x = map_frames(self.model.decode, z, self.chunk_size)
        return x.reshape(b, t, *x.shape[1:])


# Jitted once at module level; inside an outer jit they simply inline.
_encode_jit = jax.jit(FrameAutoencoder._encode)
_sample_jit = jax.jit(FrameAutoencoder._sample)
_decode_jit = jax.jit(FrameAutoencoder._decode)
