"""The frame-replacement tasks, for training and sampling alike, and condition dropout (§2.3, App. B).

Every task gives some frames of a ``T``-frame clip (per-frame ``cond_mask [B, T]``, True = the frame
is replaced by its clean latent and, in training, excluded from the loss):

=============  ==========================================  =====================================
task           given frames (of T)                          paper
=============  ==========================================  =====================================
t2i            none (T = 1)                                 T2I base model (§3.2)
t2v            none                                         T2V (§3.3)
ti2v           first                                        TI2V by frame replacement (§2.3.1)
predict        first k (default 4)                          STIV-V2V video prediction (App. J.1)
interpolate    first and last                               interpolation mode of long video (§5)
upsample       every other (0, 2, 4, ...)                   STIV-TUP temporal upsampler (App. J.2)
=============  ==========================================  =====================================

Image-condition dropout (p = 0.08) turns a sample's replacement off ("null image = no
replacement"); text dropout (p = 0.10) swaps in the empty-prompt encoding. The two are
independent (App. B), which is what JIT-CFG needs (§2.3.2).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("t2i", "t2v", "ti2v", "predict", "interpolate", "upsample")
DEFAULT_PREDICT_FRAMES = 4  # STIV-V2V gives the first 4 frames (App. J.1)


def given_frames(task: str, num_frames: int, num_given: int | None = None) -> tuple[int, ...]:
    """Indices of the frames ``task`` gives in a ``num_frames`` clip (the table above); an image
    (``num_frames == 1``) never gives its only frame, and ``predict`` leaves at least one frame."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if num_frames == 1:
        return ()
    if task == "ti2v":
        return (0,)
    if task == "predict":
        return tuple(range(min(DEFAULT_PREDICT_FRAMES if num_given is None else num_given, num_frames - 1)))
    if task == "interpolate":
        return (0, num_frames - 1)
    if task == "upsample":
        return tuple(range(0, num_frames, 2))
    return ()


def task_masks(names: tuple[str, ...], frames: int, predict_frames: int = DEFAULT_PREDICT_FRAMES) -> np.ndarray:
    """Static ``[num_tasks, frames]`` table of given frames, one row per training task."""
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ValueError(f"unknown training task(s) {unknown}; choose from {TASKS}")
    table = np.zeros((len(names), frames), bool)
    for i, name in enumerate(names):
        table[i, list(given_frames(name, frames, predict_frames))] = True
    return table


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
