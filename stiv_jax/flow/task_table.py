"""The frame-replacement tasks, shared by training and sampling (§2.3): which frames each gives.

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
multiview      first (the input view; frames: the orbit)    multi-view generation (App. J.3)
=============  ==========================================  =====================================

``multiview`` gives what ``ti2v`` gives; its frames are views of an object at equally spaced
azimuths, its text is empty, and its runs use zero latents as the null image (``NULL_IMAGES``:
what image-condition dropout gives, flow/tasks.py).

numpy only (no JAX), so the PyTorch pipeline (stiv_jax/export) reads the same table.
"""

from __future__ import annotations

import numpy as np

TASKS = ("t2i", "t2v", "ti2v", "predict", "interpolate", "upsample", "multiview")
NULL_IMAGES = ("noise", "zeros")
DEFAULT_PREDICT_FRAMES = 4  # STIV-V2V gives the first 4 frames (App. J.1)


def given_frames(task: str, num_frames: int, num_given: int | None = None) -> tuple[int, ...]:
    """Indices of the frames ``task`` gives in a ``num_frames`` clip (the table above); an image
    (``num_frames == 1``) never gives its only frame, and ``predict`` leaves at least one frame."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if num_frames == 1:
        return ()
    if task in ("ti2v", "multiview"):
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


def given_frame_indices(task: str, num_frames: int, num_given: int | None = None) -> tuple[int, ...]:
    """Indices of the given (replaced) frames of a ``num_frames`` clip for ``task``
    (:func:`given_frames`), refusing clips too short for the task (the
    samplers' check, JAX and PyTorch)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS} (or use long.py)")
    if task == "t2i" and num_frames != 1:
        raise ValueError(f"t2i generates one frame, got num_frames={num_frames}")
    min_frames = {"ti2v": 2, "predict": 2, "interpolate": 3, "upsample": 2, "multiview": 2}.get(task, 1)
    if num_frames < min_frames:
        raise ValueError(f"task {task!r} needs num_frames >= {min_frames}, got {num_frames}")
    k = DEFAULT_PREDICT_FRAMES if num_given is None else num_given
    if task == "predict" and not 1 <= k < num_frames:
        raise ValueError(f"predict needs 1 <= num_given < num_frames={num_frames}, got {k}")
    return given_frames(task, num_frames, num_given)
