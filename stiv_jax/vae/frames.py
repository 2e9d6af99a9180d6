"""Per-frame video ↔ latent interface over the frozen VAE, and the factory the trainer, sampler and
stiv-encode-shards use (``build_autoencoder``).

STIV uses a 2D VAE frame by frame (paper §3.1), so a video ``[B, T, H, W, 3]`` is folded to
``B·T`` images and processed in chunks of ``chunk_size`` frames inside one ``lax.map``, which
bounds activation memory whatever the clip length. Latents are normalised the diffusers way,
``z = (mean − shift_factor) · scaling_factor``, so they have roughly unit variance for the DiT.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.pretrained_config import config_get
from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.vae.pixel import PixelAutoencoder


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


def build_autoencoder(config: Any) -> PixelAutoencoder | FrameAutoencoder:
    """The frame autoencoder a config names (a dict, ``ml_collections.ConfigDict`` or object).

    Keys: ``kind`` (``"pixel"`` | ``"kl"``); for pixel: ``downsample`` (default 1); for kl:
    ``checkpoint`` (a directory written by ``stiv-import --kind=vae``) or else ``model`` (preset
    name, JSON path or dict; randomly initialised from ``seed`` — for tests and toy runs),
    ``chunk_size`` (frames per VAE call, default 16), ``dtype`` (compute dtype override).
    """
    kind = config_get(config, "kind", "pixel")
    if kind == "pixel":
        return PixelAutoencoder(downsample=int(config_get(config, "downsample", 1)))
    if kind != "kl":
        raise ValueError(f"unknown autoencoder kind {kind!r}; use 'pixel' or 'kl'")
    from stiv_jax.pretrained import load_pretrained, random_init

    overrides = {"dtype": config_get(config, "dtype")} if config_get(config, "dtype") else {}
    checkpoint = config_get(config, "checkpoint")
    if checkpoint:
        model = load_pretrained(checkpoint, expect_kind="vae", **overrides).model
    else:
        cfg = AutoencoderKLConfig.resolve(config_get(config, "model", "sd-vae-ft-ema")).replace(**overrides)
        model = random_init("vae", cfg, int(config_get(config, "seed", 0)))
    return FrameAutoencoder(model, chunk_size=int(config_get(config, "chunk_size", 16)))


def load_autoencoder(config: Any) -> FrameAutoencoder:
    """Like :func:`build_autoencoder` for ``kind="kl"``, but only from a pretrained ``checkpoint``."""
    if not config_get(config, "checkpoint"):
        raise ValueError("the autoencoder config needs `checkpoint`: a directory written by stiv-import --kind=vae")
    return build_autoencoder({"kind": "kl", "checkpoint": config_get(config, "checkpoint"),
                              "chunk_size": config_get(config, "chunk_size", 16), "dtype": config_get(config, "dtype")})
