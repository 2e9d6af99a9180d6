"""stiv_jax: a JAX/TPU-native implementation of STIV (arXiv 2412.07730).

One diffusion transformer for text-to-video, text-image-to-video, video prediction, frame
interpolation and long videos. See README.md for the tour.
"""

__version__ = "0.1.0"
