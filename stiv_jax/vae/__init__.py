"""stiv_jax.vae: frame autoencoders — the frozen AutoencoderKL (SD VAE) and the identity pixel one.

Both expose ``encode``/``decode`` on ``[B, T, H, W, C]`` videos, ``latent_channels`` and
``downsample``; ``stiv_jax.encoders.build.build_autoencoder(config)`` returns either.
"""

from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.vae.frames import FrameAutoencoder
from stiv_jax.vae.pixel import PixelAutoencoder

__all__ = ["AutoencoderKL", "AutoencoderKLConfig", "FrameAutoencoder", "PixelAutoencoder"]
