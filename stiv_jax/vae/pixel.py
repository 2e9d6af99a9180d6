"""Identity "pixel" autoencoder: space-to-depth instead of a learned VAE, for toy runs.

Encodes frames ``[B, T, H, W, 3]`` in [-1, 1] to latents ``[B, T, H/f, W/f, 3·f²]`` by folding
each f×f pixel block into channels; decode is the exact inverse. It lets the whole STIV stack
(data → latents → DiT → sampler → video) run on a CPU without pretrained weights, and has the same
interface as the learned VAE (``encode``/``decode``, ``latent_channels``, ``downsample``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class PixelAutoencoder:
    """Space-to-depth autoencoder with factor ``downsample`` (1 = raw pixels)."""

    downsample: int = 1
    image_channels: int = 3

    @property
    def latent_channels(self) -> int:
        return self.image_channels * self.downsample**2

    def encode(self, frames: jax.Array) -> jax.Array:
        *lead, h, w, c = frames.shape
        f = self.downsample
        if h % f or w % f:
            raise ValueError(f"frame size {h}x{w} is not divisible by downsample={f}")
        x = frames.reshape(*lead, h // f, f, w // f, f, c)
        x = jnp.moveaxis(x, -4, -3)  # [..., h/f, w/f, f, f, c]
        return x.reshape(*lead, h // f, w // f, f * f * c)

    def decode(self, latents: jax.Array) -> jax.Array:
        *lead, h, w, cf = latents.shape
        f = self.downsample
        c = cf // (f * f)
        x = latents.reshape(*lead, h, w, f, f, c)
        x = jnp.moveaxis(x, -3, -4)  # [..., h, f, w, f, c]
        return x.reshape(*lead, h * f, w * f, c)
