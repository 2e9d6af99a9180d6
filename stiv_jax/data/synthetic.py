"""The embedded demo dataset: one coloured shape moving on a plain dark background.

Each clip shows a red/green/blue/yellow circle/square/triangle that starts near the centre and
moves left, right, up or down at constant speed (or stands still); the caption says exactly that
("a red circle moving left", "a blue square standing still"). It is small enough to train a tiny
STIV on a CPU, yet text, first-frame (TI2V) and motion conditioning all matter for it. Clips are
written as real H.264 mp4 files through PyAV together with ``captions.jsonl`` (the shard writer's
caption contract) and a word-level SentencePiece model ``spm.model`` with T5 id conventions, so the
demo needs no downloads. Everything is deterministic for a seed.
"""

from __future__ import annotations

import io
import itertools
import json
import os

import chex
import numpy as np

from stiv_jax.data import video_io

COLORS = {
    "red": (225, 45, 45),
    "green": (50, 205, 70),
    "blue": (60, 100, 235),
    "yellow": (235, 215, 50),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still")
_DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}
_SUPERSAMPLE = 4
# Shape radius and path length as fractions of the frame size. Shapes are large (≈ 0.45 of the
# frame across) so that circle, square and triangle still differ by several pixels at the demo's
# 24 px. Every moving path starts within START_JITTER px of the centre, so where a clip starts
# says nothing about its direction: only the caption does (a model cannot guess the direction
# from frame 0's position, in T2V or in TI2V), and the path runs from there to at most the edge.
FPS = 8.0  # frame rate of the rendered mp4s
RADIUS = (0.20, 0.24)
TRAVEL = (0.30, 0.42)
START_JITTER = 1.0


def caption_for(color: str, shape: str, motion: str) -> str:
    if motion == "still":
        return f"a {color} {shape} standing still"
    return f"a {color} {shape} moving {motion}"


def _shape_mask(shape: str, y: np.ndarray, x: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: float):
    """Boolean mask of ``shape`` centred at (cy, cx) (broadcast over frames) with radius ``r``."""
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        half = 0.85 * r
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":  # equilateral, pointing up, circumradius r
        s3 = np.sqrt(3.0)
        return (dy <= r / 2) & (s3 * dx - dy <= r) & (-s3 * dx - dy <= r)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def shape_coverage(shape: str, size: int, cy: np.ndarray, cx: np.ndarray, r: float) -> np.ndarray:
    """Fraction of each pixel of a ``size``² frame that ``shape`` covers (4×4 supersampling):
    ``[len(cy), size, size]`` for centres ``(cy[i], cx[i])`` in pixel units."""
    cy, cx = np.atleast_1d(cy), np.atleast_1d(cx)
    grid = (np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    mask = _shape_mask(shape, grid[None, :, None], grid[None, None, :], cy[:, None, None], cx[:, None, None], r)
    return mask.reshape(len(cy), size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))


def render_clip(
    color: str, shape: str, motion: str, num_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Renders ``uint8 [num_frames, size, size, 3]`` (antialiased by 4x supersampling).

    ``rng`` picks the background shade, the shape's radius (``RADIUS``), its path length
    (``TRAVEL``, shortened to the room left before the edge), the start within ``START_JITTER``
    px of the centre on the moving axis and the position across it; the shape stays fully inside
    the frame.
    """
    if color not in COLORS or motion not in _DIRECTIONS:
        raise ValueError(f"unknown color {color!r} or motion {motion!r}")
    background = rng.integers(8, 36, size=3)
    r = size * rng.uniform(*RADIUS)
    lo, hi = r + 1, size - r - 1
    if hi <= lo:
        raise ValueError(f"size={size} is too small for a demo shape")
    dy, dx = _DIRECTIONS[motion]
    start = size / 2 + rng.uniform(-START_JITTER, START_JITTER)
    room = hi - start if dy + dx > 0 else start - lo
    travel = min(size * rng.uniform(*TRAVEL), room) if motion != "still" else 0.0
    across = rng.uniform(lo, hi)
    pos = start + (dy + dx) * np.linspace(0.0, travel, num_frames)
    cy = pos if dy else np.full(num_frames, across)
    cx = pos if dx else np.full(num_frames, across)

    cover = shape_coverage(shape, size, cy, cx, r)
    fg = np.asarray(COLORS[color], np.float32)
    frames = background + cover[..., None] * (fg - background)
    out = np.round(frames).astype(np.uint8)
    chex.assert_shape(out, (num_frames, size, size, 3))
    return out


def demo_items(num_videos: int, seed: int) -> list[tuple[str, str, str]]:
    """``num_videos`` (color, shape, motion) triples: every combination equally often (±1)."""
    combos = list(itertools.product(COLORS, SHAPES, MOTIONS))
    order = np.random.default_rng(seed).permutation(len(combos))
    return [combos[order[i % len(combos)]] for i in range(num_videos)]


def train_sentencepiece(captions: list[str], path: str, vocab_size: int = 64) -> str:
    """Word-level SentencePiece model with T5 ids (pad 0, eos 1, unk 2, no bos); deterministic."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(set(captions))),
        model_writer=model,
        model_type="word",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def make_demo_data(
    out: str,
    num_videos: int = 240,
    seed: int = 0,
    size: int = 64,
    num_frames: int = 16,
    fps: float = FPS,
) -> list[dict]:
    """Writes ``out/videos/NNNNN.mp4``, ``out/captions.jsonl`` and ``out/spm.model``."""
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    entries = []
    for i, (color, shape, motion) in enumerate(demo_items(num_videos, seed)):
        rng = np.random.default_rng([seed, i])
        frames = render_clip(color, shape, motion, num_frames, size, rng)
        rel = f"videos/{i:05d}.mp4"
        video_io.write_video(os.path.join(out, rel), frames, fps)
        entries.append({"video": rel, "caption": caption_for(color, shape, motion)})
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    train_sentencepiece([e["caption"] for e in entries], os.path.join(out, "spm.model"))
    return entries
