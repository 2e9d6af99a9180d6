"""Plain softmax attention (the ``xla`` attention implementation) whose backward pass reads only
the saved probabilities (§2.1; used by stiv_jax/model/attention.py and as splash's fallback)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

ATTENTION_PROBS = "attention_probs"


@jax.custom_vjp
def _softmax(logits: jax.Array) -> jax.Array:
    """Softmax over the last axis. Its backward pass reads only the probabilities, tagged
    :data:`ATTENTION_PROBS` (a remat policy that saves the name then recomputes nothing)."""
    return jax.nn.softmax(logits, axis=-1)


def _softmax_fwd(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    probs = checkpoint_name(jax.nn.softmax(logits, axis=-1), ATTENTION_PROBS)
    return probs, probs


def _softmax_bwd(probs: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (probs * (g - jnp.sum(probs * g, axis=-1, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Plain softmax attention on ``[N, S, H, D]`` (the ``xla`` implementation).

    The maths of ``jax.nn.dot_product_attention(implementation='xla')``, written head-major
    without its per-head ``vmap``; the probabilities are tagged :data:`ATTENTION_PROBS` so a
    remat policy can keep them, sparing the backward pass a second QKᵀ and softmax. On CPU
    (stiv-bench, remat 'dots') this made the train step 1.08× faster than
    ``jax.nn.dot_product_attention``. The 1/√D scale is folded into ``q`` when that is exact (D a
    power of 4, e.g. 64: the scale is a power of two), else applied to the float32 logits as
    ``jax.nn.dot_product_attention`` does, so the numerics match it up to float rounding.
    """
    scale = q.shape[-1] ** -0.5
    exact = math.log2(scale).is_integer()
    if exact:
        q = q * jnp.asarray(scale, q.dtype)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32)
    if not exact:
        logits = logits * jnp.float32(scale)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jnp.einsum("nhqk,nkhd->nqhd", _softmax(logits).astype(v.dtype), v)
