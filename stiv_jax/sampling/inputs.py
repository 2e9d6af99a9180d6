"""Conditioning pixels for the sampler: images and video frames in, fitted to the sampling size.

Given frames (the TI2V first image, the last image of interpolation, the prediction / TUP clip)
are fitted the way training crops clips (``data/transforms.py``): resized so the target H×W is
covered with the aspect ratio kept, then centre-cropped. Pixels are ``uint8 [..., H, W, 3]``
on the way in and out; the model sees [-1, 1] (``to_unit_range``) and produces [-1, 1]
(:func:`to_uint8` is its exact inverse on the uint8 grid).
"""

from __future__ import annotations

import math
import os

import chex
import jax.numpy as jnp
import numpy as np
from PIL import Image

from stiv_jax.data import video_io
from stiv_jax.data.transforms import crop_geometry, to_unit_range
from stiv_jax.errors import ConfigError

__all__ = ["as_model_pixels", "check_fps", "fit_frames", "load_image", "load_video", "to_uint8", "to_unit_range"]

# Frame rates video_io's writers handle: H.264/VP9 time bases (denominator <= 1001; above ~2000
# fps the written file has no decodable frame); GIF frame delays are whole centiseconds (players
# show a delay under 1 cs at 10 fps).
FPS_RANGE = (0.01, 1000.0)
GIF_MAX_FPS = 100.0


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes ``uint8 [T, h, w, 3]`` to cover ``height × width`` and centre-crops to it."""
    frames = np.asarray(frames)
    chex.assert_rank(frames, 4)
    if frames.dtype != np.uint8:
        raise TypeError(f"fit_frames wants uint8 frames, got {frames.dtype}")
    _, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    rh, rw, top, left = crop_geometry(h, w, height, width, None)
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        if (rh, rw) != (h, w):
            image = image.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        out.append(np.asarray(image)[top : top + height, left : left + width])
    return np.stack(out)


def _check_exists(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path!r}: no such file")


def load_image(path: str, height: int, width: int, *, flag: str = "--image") -> np.ndarray:
    """An image file (any Pillow format, EXIF orientation applied) → ``uint8 [height, width, 3]``."""
    _check_exists(path, flag)
    try:
        image = video_io.decode_image(path)
    except video_io.MediaError as e:
        raise ValueError(f"{flag} {path!r}: {e}") from e
    return fit_frames(image, height, width)[0]


def load_video(
    path: str, num_frames: int, height: int, width: int, *, stride: int = 1, flag: str = "--video"
) -> np.ndarray:
    """Frames 0, stride, 2·stride, … (``num_frames`` of them) of a video → ``uint8 [T, H, W, 3]``."""
    _check_exists(path, flag)
    if stride < 1:
        raise ValueError(f"video stride must be >= 1, got {stride}")
    try:
        info = video_io.probe(path)
        needed = (num_frames - 1) * stride + 1
        if info.num_frames < needed:
            raise ValueError(
                f"{flag} {path!r} has {info.num_frames} frames; {num_frames} frames at stride {stride} need {needed}"
            )
        frames = video_io.decode_video(path, np.arange(num_frames) * stride)
    except video_io.MediaError as e:
        raise ValueError(f"{flag} {path!r}: {e}") from e
    return fit_frames(frames, height, width)


def check_fps(fps: float, flag: str = "--fps", *, gif: bool = False) -> float:
    """``fps`` when the video writers can use it, else :class:`ConfigError` naming ``flag``."""
    lo, hi = FPS_RANGE[0], (GIF_MAX_FPS if gif else FPS_RANGE[1])
    if not (math.isfinite(fps) and lo <= fps <= hi):
        raise ConfigError(f"{flag} must be a frame rate in [{lo:g}, {hi:g}]{' for a GIF' if gif else ''}, got {fps}")
    return fps


def to_uint8(video: jnp.ndarray) -> jnp.ndarray:
    """Pixels in [-1, 1] → ``uint8`` (clipped, rounded; inverse of ``to_unit_range``)."""
    return jnp.round((jnp.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def as_model_pixels(value: np.ndarray | None, height: int, width: int, name: str, *, ndim: int) -> np.ndarray:
    """uint8 (fitted) or float32 [-1, 1] (exact size) pixels → float32 ``[B, G, H, W, 3]``.

    ``ndim`` is 3 for images (``[H, W, 3]`` or ``[B, H, W, 3]``; G = 1) and 4 for videos
    (``[T, H, W, 3]`` or ``[B, T, H, W, 3]``; G = T); ``name`` is used in error messages.
    """
    if value is None:
        raise ValueError(f"{name} is required")
    value = np.asarray(value)
    if value.ndim == ndim:
        value = value[None]
    if value.ndim != ndim + 1 or value.shape[-1] != 3:
        raise ValueError(
            f"{name} must be [{'T, ' if ndim == 4 else ''}H, W, 3] or with a batch "
            f"dim in front, got shape {value.shape}"
        )
    if value.dtype == np.uint8:
        lead = value.shape[:-3]
        fitted = fit_frames(value.reshape(-1, *value.shape[-3:]), height, width)
        value = to_unit_range(fitted).reshape(*lead, height, width, 3)
    elif value.shape[-3:-1] != (height, width):
        raise ValueError(
            f"{name} is {value.shape[-3]}x{value.shape[-2]} float pixels; give uint8 "
            f"pixels (fitted automatically) or exactly {height}x{width}"
        )
    value = value.astype(np.float32)
    if value.size and (value.min() < -1.001 or value.max() > 1.001):
        raise ValueError(
            f"{name}: float pixels must lie in [-1, 1], got [{value.min():.3g}, "
            f"{value.max():.3g}] (pass uint8 arrays for 0-255 pixels)"
        )
    value = value if ndim == 4 else value[:, None]
    chex.assert_rank(value, 5)
    return value
