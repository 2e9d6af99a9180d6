"""Identity "pixel" autoencoder: space-to-depth instead of a learned VAE, for toy runs.

Encodes frames ``[B, T, H, W, 3]`` in [-1, 1] to latents ``[B, T, H/f, W/f, 3·f²]`` by folding
each f×f pixel block into channels; decode is the exact inverse. It lets the whole STIV stack
(data → latents → DiT → sampler → video) run on a CPU without pretrained weights, and has the same
interface as the learned VAE (``encode``/``decode``, ``latent_channels``, ``downsample``).

Like a learned VAE's latents (rescaled to unit variance: Rombach et al. 2022, §4.3.2 and App. D.1;
SD3's VAE also shifts them), the folded pixels can be standardised, ``(x − shift_factor)·scaling_factor``:
the DiT then sees data of unit scale against its N(0, 1) noise, and its errors reach the pixels
scaled down by ``1 / scaling_factor`` (docs/demo_shapes.md). The defaults (1, 0) keep the raw pixels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class PixelAutoencoder:
    """Space-to-depth autoencoder with factor ``downsample`` (1 = raw pixels), then
    ``(x − shift_factor)·scaling_factor``."""

    downsample: int = 1
    image_channels: int = 3
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def __post_init__(self):
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor must be positive, got {self.scaling_factor}")

    @property
    def is_raw(self) -> bool:
        """Whether the latents are the folded pixels themselves (no scaling or shift)."""
        return self.scaling_factor == 1.0 and self.shift_factor == 0.0

    @property
    def spec(self) -> str:
        """The command-line spec that builds this autoencoder (``encoders.build.from_spec``)."""
        extra = "" if self.is_raw else f":scale={float(self.scaling_factor)!r}:shift={float(self.shift_factor)!r}"
        return f"pixel:{self.downsample}{extra}"

    @property
    def latent_channels(self) -> int:
        return self.image_channels * self.downsample**2

    def encode(self, frames: jax.Array) -> jax.Array:
        z = space_to_depth(frames, self.downsample)
        return z if self.is_raw else (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents: jax.Array) -> jax.Array:
        if not self.is_raw:
            latents = latents / self.scaling_factor + self.shift_factor
        return depth_to_space(latents, self.downsample)


def space_to_depth(frames: jax.Array, f: int) -> jax.Array:
    """``[..., H, W, c]`` → ``[..., H/f, W/f, f·f·c]``: each f×f pixel block folded into channels."""
    *lead, h, w, c = frames.shape
    if h % f or w % f:
        raise ValueError(f"frame size {h}x{w} is not divisible by downsample={f}")
    x = jnp.moveaxis(frames.reshape(*lead, h // f, f, w // f, f, c), -4, -3)  # [..., h/f, w/f, f, f, c]
    return x.reshape(*lead, h // f, w // f, f * f * c)


def depth_to_space(latents: jax.Array, f: int) -> jax.Array:
    """The inverse of :func:`space_to_depth`: ``[..., h, w, f·f·c]`` → ``[..., h·f, w·f, c]``."""
    *lead, h, w, cf = latents.shape
    x = jnp.moveaxis(latents.reshape(*lead, h, w, f, f, cf // (f * f)), -3, -4)  # [..., h, f, w, f, c]
    return x.reshape(*lead, h * f, w * f, cf // (f * f))
