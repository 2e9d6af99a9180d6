"""Training task mixing through frame replacement, and condition dropout (§2.3, App. B).

Every task is a per-frame boolean ``cond_mask [B, T]`` (True = the frame is replaced by its clean
latent and excluded from the loss):

- ``t2v`` / ``t2i``: nothing replaced;
- ``ti2v``: the first frame (text-image-to-video);
- ``predict``: the first ``predict_frames`` frames (video prediction, §5);
- ``interpolate``: first and last frames (frame interpolation / long-video in-between, §5);
- ``upsample``: every other frame (temporal upsampler STIV-TUP, §5).

Image-condition dropout (p = 0.08) turns a sample's replacement off ("null image = no
replacement"); text dropout (p = 0.10) swaps in the empty-prompt encoding. The two are
independent (App. B), which is what JIT-CFG needs (§2.3.2).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("t2v", "t2i", "ti2v", "predict", "interpolate", "upsample")


def task_masks(names: tuple[str, ...], frames: int, predict_frames: int = 4) -> np.ndarray:
    """Static ``[num_tasks, frames]`` table of replaced frames (images never replace)."""
    table = np.zeros((len(names), frames), bool)
    for i, name in enumerate(names):
        if name not in TASKS:
            raise ValueError(f"unknown training task {name!r}; choose from {TASKS}")
        if frames == 1:
            continue
        if name == "ti2v":
            table[i, 0] = True
        elif name == "predict":
            table[i, : min(predict_frames, frames - 1)] = True
        elif name == "interpolate":
            table[i, [0, frames - 1]] = True
        elif name == "upsample":
            table[i, ::2] = True
    return table


def sample_frame_conditions(key: jax.Array, batch: int, frames: int, weights: Mapping[str, float], *, predict_frames: int = 4, image_dropout: float = 0.08) -> jax.Array:
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


def drop_text(key: jax.Array, prob: float, text: jax.Array, text_mask: jax.Array, pooled: jax.Array, null_text: jax.Array, null_mask: jax.Array, null_pooled: jax.Array):
    """With probability ``prob`` per sample, replaces the prompt encoding by the null (empty) one."""
    b = text.shape[0]
    drop = jax.random.uniform(key, (b,)) < prob
    pick = lambda new, old: jnp.where(drop.reshape((b,) + (1,) * (old.ndim - 1)), jnp.broadcast_to(new, old.shape).astype(old.dtype), old)
    return pick(null_text, text), pick(null_mask, text_mask), pick(null_pooled, pooled), drop


def replace_frames(x_t: jax.Array, x1: jax.Array, cond_mask: jax.Array) -> jax.Array:
    """Frame replacement: clean latents where ``cond_mask`` is set (§2.3.1)."""
    return jnp.where(cond_mask[:, :, None, None, None], x1, x_t)
