"""Training-time task sampling, condition dropout and frame replacement (§2.3, App. B).

The task table (which frames each task gives) is ``task_table.py``; a training sample draws a
task by ``config.tasks`` weights. Image-condition dropout (p = 0.08) turns a sample's replacement
off ("null image = no replacement"); text dropout (p = 0.10) swaps in the empty-prompt encoding.
The two are independent (App. B), which is what JIT-CFG needs (§2.3.2).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.flow.task_table import task_masks


def sample_frame_conditions(
    key: jax.Array,
    batch: int,
    frames: int,
    weights: Mapping[str, float],
    *,
    predict_frames: int = 4,
    image_dropout: float = 0.08,
) -> jax.Array:
    """Draws a task per sample (by ``weights``), applies image dropout; returns ``cond_mask [B, T]``."""
    names = tuple(k for k, v in weights.items() if v > 0)
    if not names:
        raise ValueError("config.tasks gives no task a positive weight")
    probs = np.array([weights[n] for n in names], np.float64)
    table = jnp.asarray(task_masks(names, frames, predict_frames))
    k_task, k_drop = jax.random.split(key)
    task = jax.random.choice(k_task, len(names), (batch,), p=jnp.asarray(probs / probs.sum()))
    keep = jax.random.uniform(k_drop, (batch,)) >= image_dropout
    return table[task] & keep[:, None]


def drop_text(
    key: jax.Array,
    prob: float,
    text: jax.Array,
    text_mask: jax.Array,
    pooled: jax.Array,
    null_text: jax.Array,
    null_mask: jax.Array,
    null_pooled: jax.Array,
):
    """With probability ``prob`` per sample, replaces the prompt encoding by the null (empty) one."""
    b = text.shape[0]
    drop = jax.random.uniform(key, (b,)) < prob
    pick = lambda new, old: jnp.where(
        drop.reshape((b,) + (1,) * (old.ndim - 1)), jnp.broadcast_to(new, old.shape).astype(old.dtype), old
    )
    return pick(null_text, text), pick(null_mask, text_mask), pick(null_pooled, pooled), drop


def replace_frames(x_t: jax.Array, x1: jax.Array, cond_mask: jax.Array) -> jax.Array:
    """Frame replacement: clean latents where ``cond_mask`` is set (§2.3.1)."""
    return jnp.where(cond_mask[:, :, None, None, None], x1, x_t)
