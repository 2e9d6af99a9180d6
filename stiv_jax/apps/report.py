"""Reading the demo's videos back: what colour, shape and motion does a generated clip show?

An independent check that the trained model follows its prompt (the moving-shapes world is simple
enough to measure): the foreground is every pixel clearly brighter than the dark background; its
mean colour names the nearest demo colour; the shape is the demo shape whose rendering (same area,
same centroid: a circle's, square's and equilateral triangle's centre is their centroid) best
matches the frame's soft coverage, which stays reliable at 24 px where thresholded fill ratios
confuse triangles with circles; the centroid's displacement from the first to the last frame
names the motion. The applications' measurements compare generated frames with true ones (PSNR,
sub-pixel centroids). Also renders the contact sheet and the loss curve as PNG files.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Sequence

import chex
import numpy as np

from stiv_jax.data.synthetic import COLORS, MOTIONS, SHAPES, caption_for, render_clip, shape_coverage

# Area of each demo shape with radius 1 (synthetic._shape_mask): πr², (1.7r)², (3√3/4)r².
SHAPE_AREA = {"circle": np.pi, "square": 1.7**2, "triangle": 3 * np.sqrt(3) / 4}


def foreground(frame: np.ndarray) -> np.ndarray:
    lum = frame.astype(np.float32).max(axis=-1)
    return lum > max(80.0, float(np.median(lum)) + 60.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 arrays; identical ones read 200 dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def describe(video: np.ndarray, still_fraction: float = 0.08) -> dict:
    """``uint8 [T, H, W, 3]`` → ``{'color', 'shape', 'motion'}`` (``None`` where nothing is seen)."""
    t, h, w, _ = video.shape
    masks = [foreground(f) for f in video]
    if min(m.sum() for m in masks) < 3:
        return dict(color=None, shape=None, motion=None)
    pixels = np.concatenate([f[m] for f, m in zip(video, masks)]).astype(np.float32).mean(axis=0)
    color = min(COLORS, key=lambda c: np.sum((np.array(COLORS[c], np.float32) - pixels) ** 2))
    shape = _shape(video, COLORS[color])
    centroid = lambda m: np.array(np.nonzero(m)).mean(axis=1)
    dy, dx = centroid(masks[-1]) - centroid(masks[0])
    if max(abs(dy), abs(dx)) < still_fraction * h:
        motion = "still"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return dict(color=color, shape=shape, motion=motion)


def centroids(video: np.ndarray) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` → ``[T, 2]`` (y, x) centroids of the foreground, each pixel weighted by
    how much brighter than the background it is (sub-pixel); NaN where a frame shows nothing."""
    chex.assert_rank(video, 4)
    out = np.full((video.shape[0], 2), np.nan)
    for t, frame in enumerate(video):
        lum = frame.astype(np.float64).max(axis=-1)
        weight = np.where(foreground(frame), lum - np.median(lum), 0.0)
        if weight.sum() > 0:
            ys, xs = np.indices(lum.shape) + 0.5
            out[t] = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
    return out


def frame_scores(truth: np.ndarray, guess: np.ndarray, frames: slice) -> dict:
    """Mean PSNR (per clip) and centroid error (per frame) of ``guess[:, frames]`` against
    ``truth[:, frames]`` (``uint8 [N, T, H, W, 3]``): how close generated frames are to the true
    ones; frames where either shows no shape are counted apart, not in the error."""
    errors = np.concatenate(
        [
            np.linalg.norm(centroids(g[frames]) - centroids(t[frames]), axis=-1)
            for t, g in zip(truth, guess, strict=True)
        ]
    )
    seen = np.isfinite(errors)
    return dict(
        psnr_db=float(np.mean([psnr(t[frames], g[frames]) for t, g in zip(truth, guess)])),
        centroid_error_px=float(errors[seen].mean()) if seen.any() else float("nan"),
        frames_without_shape=int((~seen).sum()),
    )


def _shape(video: np.ndarray, rgb: tuple[int, int, int]) -> str:
    """The shape whose same-area, same-centroid rendering is nearest (L1) to the soft coverage."""
    lum = video.astype(np.float32).max(axis=-1)
    background = np.median(lum, axis=(1, 2), keepdims=True)
    alpha = np.clip((lum - background) / (max(rgb) - background), 0.0, 1.0)  # [T, H, W]
    area = alpha.sum(axis=(1, 2))
    ys, xs = np.indices(alpha.shape[1:]) + 0.5
    cy, cx = ((alpha * g).sum(axis=(1, 2)) / area for g in (ys, xs))
    errors = {}
    for s in SHAPES:
        r = np.sqrt(np.median(area) / SHAPE_AREA[s])
        errors[s] = np.abs(shape_coverage(s, alpha.shape[1], cy, cx, r) - alpha).sum()
    return min(errors, key=errors.get)


def all_prompts(moving_only: bool = False) -> list[str]:
    """The caption of every (colour, shape, motion) combination of the demo world (60; 48 that
    move with ``moving_only``)."""
    motions = [m for m in MOTIONS if m != "still"] if moving_only else MOTIONS
    return [caption_for(*c) for c in itertools.product(COLORS, SHAPES, motions)]


def render_prompt(prompt: str, seed: int, size: int = 64, num_frames: int = 16) -> np.ndarray:
    """``uint8 [num_frames, size, size, 3]``: the clip of a demo caption rendered like the training
    data; it depends only on the caption and ``seed``."""
    want = parse_caption(prompt)
    rng = np.random.default_rng([seed, zlib.crc32(prompt.encode())])
    return render_clip(want["color"], want["shape"], want["motion"], num_frames, size, rng)


def first_frames(prompts: Sequence[str], seed: int = 1234, size: int = 64) -> np.ndarray:
    """``uint8 [N, size, size, 3]``: frame 0 of each prompt's clip (:func:`render_prompt`), the TI2V
    conditioning image."""
    return np.stack([render_prompt(prompt, seed, size)[0] for prompt in prompts])


def prompt_following(
    generate: Callable[[list[str]], Sequence[np.ndarray]], prompts: Sequence[str] | None = None, batch: int = 20
) -> dict:
    """Fraction of ``prompts`` (default: all 60) whose generated video shows the asked colour,
    shape and motion; ``generate(prompts) → uint8 [T, H, W, 3] videos``. Also reports whether
    moving vs standing still is right, and chance: a uniform guess among the colours, shapes and
    motions the prompts ask for (all 60: 1/4, 1/3, 1/5; moving vs still ≈ 0.68)."""
    prompts = list(prompts or all_prompts())
    asked = [parse_caption(p) for p in prompts]
    hits = {"color": 0, "shape": 0, "motion": 0, "moving_or_still": 0}
    for i in range(0, len(prompts), batch):
        for want, video in zip(asked[i : i + batch], generate(prompts[i : i + batch])):
            seen = describe(np.asarray(video))
            for k in ("color", "shape", "motion"):
                hits[k] += seen[k] == want[k]
            hits["moving_or_still"] += (seen["motion"] == "still") == (want["motion"] == "still") and seen[
                "motion"
            ] is not None
    options = lambda k: len({a[k] for a in asked})
    p_still = 1 / options("motion") if any(a["motion"] == "still" for a in asked) else 0.0
    chance = dict(
        color=1 / options("color"),
        shape=1 / options("shape"),
        motion=1 / options("motion"),
        moving_or_still=p_still**2 + (1 - p_still) ** 2,
    )
    return dict(prompts=len(prompts), accuracy={k: v / len(prompts) for k, v in hits.items()}, chance=chance)


def parse_caption(caption: str) -> dict:
    words = caption.split()
    return dict(color=words[1], shape=words[2], motion="still" if "still" in caption else words[-1])


def contact_sheet(videos: list[np.ndarray], labels: list[str], path: str, scale: int = 3) -> str:
    """One row per video (frames left to right), its label above; written as PNG."""
    from PIL import Image, ImageDraw

    t, h, w, _ = videos[0].shape
    pad, label_h = 4, 14
    sheet = Image.new(
        "RGB", (t * (w * scale + pad) + pad, len(videos) * (h * scale + label_h + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for r, (video, label) in enumerate(zip(videos, labels)):
        y = pad + r * (h * scale + label_h + pad)
        draw.text((pad, y), label, fill=(0, 0, 0))
        for f, frame in enumerate(video):
            img = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(img, (pad + f * (w * scale + pad), y + label_h))
    sheet.save(path)
    return path


def loss_curve(rows: list[dict], path: str, title: str = "") -> str:
    """PNG of the loss over the steps of ``rows`` (``Workdir.metrics()``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "loss" in r]  # training rows (evaluation rows carry eval/ keys)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in rows], label="flow-matching loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
