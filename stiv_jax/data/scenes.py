"""Hard-cut detection and a motion score, on small luma thumbnails (data curation, paper App. B).

STIV trains on clips without scene cuts and filters static videos. Both signals here come from
mean absolute luma differences of downscaled frames, which is what content-based detectors such
as PySceneDetect's ``ContentDetector`` threshold as well:

* cut before frame ``i`` when ``d_i = mean|Y_i - Y_{i-1}|`` (0..255) exceeds ``threshold`` *and*
  ``ratio`` times the local median of ``d`` (so steady fast motion or camera pans are not cuts);
  cuts closer than ``min_scene_frames`` to the previous one are ignored (flashes).
* motion score = mean over a clip of ``mean|Y_t - Y_{t-Δ}| / 255`` with Δ ≈ 1/4 s, so it is
  comparable across frame rates: 0 for a still clip, ~0.01-0.05 for a small moving object,
  larger for camera motion.
"""

from __future__ import annotations

import chex
import numpy as np

THUMB_WIDTH = 64
# Fixed, roughly logarithmic motion-score bin edges for the shard manifest histogram.
MOTION_BIN_EDGES = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0)


def thumbnail_size(height: int, width: int, thumb_width: int = THUMB_WIDTH) -> tuple[int, int]:
    """``(h, w)`` of the luma thumbnail used for analysis (width ``thumb_width``, aspect kept)."""
    w = min(thumb_width, width)
    return max(2, round(height * w / width)), w


def consecutive_differences(thumbs: np.ndarray, lag: int = 1) -> np.ndarray:
    """``d[i] = mean|Y[i + lag] - Y[i]|`` over each frame, float32 ``[N - lag]`` in 0..255."""
    chex.assert_rank(thumbs, 3)
    if len(thumbs) <= lag:
        return np.zeros((0,), np.float32)
    a = thumbs[lag:].astype(np.int16)
    b = thumbs[:-lag].astype(np.int16)
    return np.abs(a - b).mean(axis=(1, 2), dtype=np.float32)


def detect_cuts(
    thumbs: np.ndarray,
    threshold: float = 30.0,
    ratio: float = 2.5,
    window: int = 8,
    min_scene_frames: int = 8,
) -> list[int]:
    """Indices of the first frame of every new scene (never 0) in ``thumbs`` ``[N, h, w]``."""
    chex.assert_rank(thumbs, 3)
    d = consecutive_differences(thumbs)
    cuts: list[int] = []
    for i, di in enumerate(d):
        if di < threshold:
            continue
        neighbours = np.concatenate([d[max(0, i - window) : i], d[i + 1 : i + 1 + window]])
        local = float(np.median(neighbours)) if len(neighbours) else 0.0
        frame = i + 1
        if di >= ratio * local and frame - (cuts[-1] if cuts else 0) >= min_scene_frames:
            cuts.append(frame)
    return cuts


def split_ranges(num_frames: int, cuts: list[int], max_frames: int = 0) -> list[tuple[int, int]]:
    """``[(start, end)]`` frame ranges between cuts; ranges longer than ``max_frames`` (if > 0)
    are chopped into consecutive pieces of ``max_frames``."""
    bounds = [0, *[c for c in cuts if 0 < c < num_frames], num_frames]
    ranges = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        step = max_frames if max_frames > 0 else end - start
        ranges.extend((s, min(s + step, end)) for s in range(start, end, step))
    return ranges


def motion_lag(fps: float, interval: float = 0.25) -> int:
    return max(1, int(round(fps * interval)))


def motion_score(thumbs: np.ndarray, fps: float, interval: float = 0.25) -> float:
    """Mean absolute luma change per ``interval`` seconds, in [0, 1] (see module docstring)."""
    chex.assert_rank(thumbs, 3)
    lag = min(motion_lag(fps, interval), max(1, len(thumbs) - 1))
    d = consecutive_differences(thumbs, lag)
    return float(d.mean() / 255.0) if len(d) else 0.0


def motion_histogram(scores: list[float]) -> dict:
    """Counts per fixed bin (``MOTION_BIN_EDGES``; the last bin is closed)."""
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=np.asarray(MOTION_BIN_EDGES))
    return {"bin_edges": list(MOTION_BIN_EDGES), "counts": [int(c) for c in counts]}
