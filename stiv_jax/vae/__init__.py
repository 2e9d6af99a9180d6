"""stiv_jax.vae: frame autoencoders — the frozen AutoencoderKL (SD VAE) and the identity pixel one.

``build_autoencoder(config)`` returns either; both expose ``encode``/``decode`` on
``[B, T, H, W, C]`` videos, ``latent_channels`` and ``downsample``.
"""

from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.vae.frames import FrameAutoencoder, build_autoencoder, load_autoencoder
from stiv_jax.vae.pixel import PixelAutoencoder

__all__ = ["AutoencoderKL", "AutoencoderKLConfig", "FrameAutoencoder", "PixelAutoencoder", "build_autoencoder", "load_autoencoder"]
