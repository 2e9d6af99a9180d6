"""Closed-form flow-matching velocities, to check the sampler against exact answers.

For the interpolant x_t = t·x1 + (1−t)·ε (paper §2.1) the ideal model predicts
v*(x, t) = E[x1 − ε | x_t = x]. When x1 is Gaussian everything is jointly Gaussian:

- Data N(μ, σ²) per dimension: x_t ~ N(tμ, s_t²) with s_t² = t²σ² + (1−t)², and
  v*(x, t) = μ + (tσ² − (1−t)) / s_t² · (x − tμ). The flow map is affine, x_t = tμ + s_t·ε, so
  integrating v* exactly from x_0 = ε gives x_1 = μ + σ·ε (same noise → known sample).
- Mixture Σ_k w_k N(m_k, s²I): v* is the posterior-weighted sum of the per-component velocities
  above (weights ∝ w_k N(x; t·m_k, s_t² I)). Its flow is curved, so step schedules differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _component_velocity(x, t, mean, std):
    var_t = t**2 * std**2 + (1.0 - t) ** 2
    return mean + (t * std**2 - (1.0 - t)) / var_t * (x - t * mean), var_t


def gaussian_velocity(x: jax.Array, t: jax.Array, mean: jax.Array | float, std: jax.Array | float) -> jax.Array:
    """Exact velocity for data N(mean, std²) (per element; mean/std broadcast against x)."""
    return _component_velocity(x, t, mean, std)[0]


def gaussian_flow_endpoint(noise: jax.Array, mean: jax.Array | float, std: jax.Array | float) -> jax.Array:
    """Exact ODE solution at t = 1 started from ``noise`` at t = 0: mean + std·noise."""
    return mean + std * noise


def mixture_velocity(x: jax.Array, t: jax.Array, means: jax.Array, std: float, weights: jax.Array) -> jax.Array:
    """Exact velocity for data Σ_k weights_k N(means_k, std² I); x [B, D], means [K, D]."""
    v_k, var_t = _component_velocity(x[:, None, :], t, means[None], std)  # [B, K, D]
    sq_dist = jnp.sum((x[:, None, :] - t * means[None]) ** 2, axis=-1)  # [B, K]
    logits = jnp.log(weights)[None] - 0.5 * sq_dist / var_t
    post = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bk,bkd->bd", post, v_k)
