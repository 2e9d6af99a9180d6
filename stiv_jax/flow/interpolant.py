"""Linear flow-matching interpolant (§2.1; SiT).

``x_t = t·x1 + (1 − t)·ε`` with t = 0 pure noise and t = 1 data; the velocity the model learns is
``v = dx_t/dt = x1 − ε``. Sampling integrates ``dx/dt = v`` from t = 0 to 1.

A model may predict the clean data ``x̂1`` instead of ``v`` (x-prediction, Li & He 2025, "Back to
Basics: Let Denoising Generative Models Denoise"); :func:`velocity_from_data` turns that into the
velocity, so the loss, the sampler and CFG stay in velocity space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).astype(x.dtype)


def interpolate(x1: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """``x_t`` for per-sample times ``t [B]`` and data/noise ``[B, ...]``."""
    t = _bcast(t, x1)
    return t * x1 + (1.0 - t) * noise


def velocity_target(x1: jax.Array, noise: jax.Array) -> jax.Array:
    """The flow-matching regression target ``v = x1 − ε``."""
    return x1 - noise


# 1 − t is floored here near the data end (JiT's t clip), so x̂1 errors are amplified ≤ 20×.
X_PRED_MIN_GAP = 0.05


def velocity_from_data(x1_hat: jax.Array, x_t: jax.Array, t: jax.Array, min_gap: float = X_PRED_MIN_GAP) -> jax.Array:
    """The velocity implied by a data prediction: ``x_t = t·x1 + (1 − t)·ε`` gives
    ``v = x1 − ε = (x1 − x_t) / (1 − t)``; ``1 − t`` is floored at ``min_gap``."""
    x_t = x_t.astype(x1_hat.dtype)
    return (x1_hat - x_t) / jnp.maximum(1.0 - _bcast(t, x_t), min_gap)
