"""Training-time task sampling, condition dropout and frame replacement (§2.3, App. B).

The task table (which frames each task gives) is ``task_table.py``; a training sample draws a
task by ``config.tasks`` weights. Image-condition dropout (p = 0.08) replaces a sample's given
frames by the null image, one of ``NULL_IMAGES``: ``noise``, STIV's default, turns the replacement
off ("null image = no replacement", the frames stay on the noising path); ``zeros`` keeps the frames
marked as given but gives zero latents, as the multi-view model's negative views (App. J.3). Text
dropout (p = 0.10) swaps in the empty-prompt encoding. Image and text dropout are independent
(App. B), which is what JIT-CFG needs (§2.3.2).
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.flow.task_table import NULL_IMAGES, task_masks


def sample_frame_conditions(
    key: jax.Array,
    batch: int,
    frames: int,
    weights: Mapping[str, float],
    *,
    predict_frames: int = 4,
    image_dropout: float = 0.08,
) -> tuple[jax.Array, jax.Array]:
    """Draws a task per sample (by ``weights``) and image dropout; returns the task's given frames
    ``[B, T]`` and whether each sample keeps its image ``[B]`` (:func:`drop_image` applies it)."""
    names = tuple(k for k, v in weights.items() if v > 0)
    if not names:
        raise ValueError("config.tasks gives no task a positive weight")
    probs = np.array([weights[n] for n in names], np.float64)
    table = jnp.asarray(task_masks(names, frames, predict_frames))
    k_task, k_drop = jax.random.split(key)
    task = jax.random.choice(k_task, len(names), (batch,), p=jnp.asarray(probs / probs.sum()))
    keep = jax.random.uniform(k_drop, (batch,)) >= image_dropout
    return table[task], keep


def drop_image(
    given: jax.Array, keep: jax.Array, x1: jax.Array, null_image: str = "noise"
) -> tuple[jax.Array, jax.Array]:
    """Image dropout with the null image ``null_image`` (module docstring): the task's ``given``
    frames ``[B, T]``, ``keep`` ``[B]`` and clean latents ``x1`` ``[B, T, ...]`` → ``(cond_mask [B, T],
    the latents to replace them with [B, T, ...])``."""
    chex.assert_equal_shape_prefix([given, x1], 2)
    chex.assert_shape(keep, given.shape[:1])
    if null_image == "noise":
        return given & keep[:, None], x1
    if null_image == "zeros":
        return given, jnp.where(keep.reshape((-1,) + (1,) * (x1.ndim - 1)), x1, jnp.zeros_like(x1))
    raise ValueError(f"unknown null_image {null_image!r}; expected one of {NULL_IMAGES}")


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
