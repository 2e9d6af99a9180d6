"""stiv_jax: a JAX/TPU-native implementation of STIV (arXiv 2412.07730).

One diffusion transformer for text-to-video, text-image-to-video, video prediction, frame
interpolation and long videos. See README.md for the tour.
"""

__version__ = "0.1.0"

# Parameters carry *logical* axis names; they are placed on the mesh by the trainer through
# `jax.jit(..., out_shardings=...)` (stiv_jax/parallel), never eagerly at construction.
# Guarded so that `stiv_jax.export.torch_stiv` imports in a torch-only environment.
try:
    from flax import nnx as _nnx
except ImportError:  # pragma: no cover - torch-only install
    pass
else:
    _nnx.use_eager_sharding(False)
