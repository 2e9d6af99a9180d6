"""Measuring the demo's long videos (§5: keyframes, then interpolation; experiments/demo_long.py).

Over the demo captions that move, ``task='long'`` clips ((K − 1) · T frames across the joins of
K − 1 interpolation clips) are read frame by frame with the demo reader: a clip passes when every
frame shows the asked colour and shape and the shape's centroid moves monotonically in the asked
direction over the whole clip (no step back by more than ``BACKSTEP_PX``; in all at least the
reader's "moving" threshold). The baseline is the model the long run was fine-tuned from, asked
for the same clips (same strides, seed and sampler settings) without having trained either mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import numpy as np

from stiv_jax.apps.report import centroids, describe, parse_caption
from stiv_jax.sampling.options import SampleOptions

BACKSTEP_PX = 0.25  # a quarter pixel: centroid jitter allowed against the asked direction
MIN_TRAVEL = 0.08  # of the frame size, as report.describe calls a clip moving
_AXIS = {"right": (1, 1.0), "left": (1, -1.0), "down": (0, 1.0), "up": (0, -1.0)}  # (y/x axis, sign)


def check_clip(video: np.ndarray, caption: str) -> dict:
    """``uint8 [T, H, W, 3]`` against a moving ``caption``: colour and shape in every frame, and
    monotonic motion in the asked direction."""
    chex.assert_rank(video, 4)
    want = parse_caption(caption)
    seen = [describe(frame[None]) for frame in video]
    axis, sign = _AXIS[want["motion"]]
    position = sign * centroids(video)[:, axis]
    steps = np.diff(position)
    monotonic = bool(
        np.all(np.isfinite(position))
        and steps.min() >= -BACKSTEP_PX
        and position[-1] - position[0] >= MIN_TRAVEL * video.shape[1]
    )
    color = all(s["color"] == want["color"] for s in seen)
    shape = all(s["shape"] == want["shape"] for s in seen)
    return dict(color=color, shape=shape, monotonic=monotonic, all=color and shape and monotonic)


def long_report(sampler, base, prompts: Sequence[str], *, seed: int = 0, batch: int = 16) -> dict:
    """Fractions of ``prompts`` (moving captions) whose long clip passes :func:`check_clip`, for the
    long-video run ``sampler`` and for ``base`` (both :class:`~stiv_jax.sampling.pipeline.Sampler`)."""
    prompts = list(prompts)
    if any(parse_caption(p)["motion"] == "still" for p in prompts):
        raise ValueError("long_report measures motion: give captions that move")
    stride = int(sampler.config.data.frame_strides[0])
    options = SampleOptions.for_run(sampler.config, task="long", frame_stride=stride, seed=seed, batch_size=batch)
    result = {}
    for name, model in (("long", sampler), ("base", base)):
        videos = model.generate(prompts, options)
        checks = [check_clip(v, p) for v, p in zip(videos, prompts)]
        result[name] = {k: float(np.mean([c[k] for c in checks])) for k in ("color", "shape", "monotonic", "all")}
        result[name + "_videos"] = videos
    return dict(
        clips=len(prompts),
        frames=int(result["long_videos"].shape[1]),
        small_stride=stride,
        keyframe_stride=(sampler.config.data.num_frames - 1) * stride,
        backstep_px=BACKSTEP_PX,
        **result,
    )
