"""Linear flow-matching interpolant (§2.1; SiT).

``x_t = t·x1 + (1 − t)·ε`` with t = 0 pure noise and t = 1 data; the velocity the model learns is
``v = dx_t/dt = x1 − ε``. Sampling integrates ``dx/dt = v`` from t = 0 to 1.
"""

from __future__ import annotations

import jax


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).astype(x.dtype)


def interpolate(x1: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """``x_t`` for per-sample times ``t [B]`` and data/noise ``[B, ...]``."""
    t = _bcast(t, x1)
    return t * x1 + (1.0 - t) * noise


def velocity_target(x1: jax.Array, noise: jax.Array) -> jax.Array:
    """The flow-matching regression target ``v = x1 − ε``."""
    return x1 - noise
