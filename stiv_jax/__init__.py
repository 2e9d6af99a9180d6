"""stiv_jax: a JAX/TPU-native implementation of STIV (arXiv 2412.07730).

One diffusion transformer for text-to-video, text-image-to-video, video prediction, frame
interpolation and long videos. See README.md for the tour.
"""

__version__ = "0.1.0"

# Parameters carry *logical* axis names; they are placed on the mesh by the trainer through
# `jax.jit(..., out_shardings=...)` (stiv_jax/parallel), never eagerly at construction.
from flax import nnx as _nnx

_nnx.use_eager_sharding(False)
