"""From a folder of media files to clip records: captions, probing, scene split, filters.

``process_source`` turns one video or image into zero or more clip records (dicts in the
``shards`` schema, without ``key``) plus ``(name, reason)`` for everything it had to skip. It never
raises on bad media: empty, truncated, corrupt, audio-only or unreadable files become skip reasons.

A video is decoded once into luma thumbnails to count frames, find hard cuts and score motion
(``scenes``). When it yields a single clip and needs no resize, its bytes are stored unchanged
(lossless, fast); otherwise a second pass re-encodes each kept clip as H.264 mp4 in display
orientation. Duration and motion filters apply per clip, resolution filters per file; images skip
the duration and motion filters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from stiv_jax.data import scenes, video_io
from stiv_jax.data.shards import KINDS
from stiv_jax.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaError
from stiv_jax.errors import ConfigError

_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")


@dataclasses.dataclass(frozen=True)
class CurationOptions:
    split_scenes: bool = True
    cut_threshold: float = 30.0
    max_clip_seconds: float = 0.0  # chop longer scenes into pieces of this length (0: never)
    min_duration: float = 0.0  # seconds
    max_duration: float = 0.0  # 0: no limit
    min_resolution: int = 0  # shorter side, pixels
    max_resolution: int = 0  # shorter side, pixels; 0: no limit
    min_motion: float = 0.0
    max_motion: float = 0.0  # 0: no limit
    resize_short_side: int = 0  # downscale so the shorter side is at most this (0: keep)
    allow_missing_captions: bool = False


@dataclasses.dataclass
class SourceResult:
    clips: list[dict]
    skipped: list[tuple[str, str]]


def find_media(root: str, exclude: str | None = None) -> list[str]:
    """Sorted relative paths of videos and images under ``root`` (hidden entries ignored)."""
    exts = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    exclude = os.path.abspath(exclude) if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and os.path.abspath(os.path.join(dirpath, d)) != exclude
        )
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def load_captions(path: str) -> dict[str, str]:
    """Reads ``{"video": "rel/path", "caption": "..."}`` lines (UTF-8, a BOM allowed); a line that
    is not such an object raises ``ConfigError`` naming the file and line."""
    captions = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from e
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                rel, caption = entry["video"], entry["caption"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                raise ConfigError(f'{path}:{lineno}: expected {{"video": ..., "caption": ...}}: {e}') from e
            if not isinstance(rel, str) or not isinstance(caption, str):
                raise ConfigError(f"{path}:{lineno}: 'video' and 'caption' must be strings")
            captions[os.path.normpath(rel)] = caption
    return captions


def read_caption_file(path: str, warn: Callable[[str], None] = logging.warning) -> str:
    """A ``.txt`` caption: UTF-8 (a BOM allowed), else cp1252 with a warning naming the file."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
        warn(f"caption {path} is not UTF-8; read it as Windows-1252 (Latin-1): {text.strip()[:60]!r}")
    return text.strip()


def caption_for(
    root: str, rel: str, captions: dict[str, str], warn: Callable[[str], None] = logging.warning
) -> str | None:
    """Caption from the JSONL map, else from ``same_name.txt`` beside the file, else None."""
    if os.path.normpath(rel) in captions:
        return captions[os.path.normpath(rel)]
    txt = os.path.join(root, os.path.splitext(rel)[0] + ".txt")
    if os.path.exists(txt):
        return read_caption_file(txt, warn)
    return None


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Size after downscaling so the shorter side is at most ``short_side`` (even numbers)."""
    scale = short_side / min(height, width) if short_side and min(height, width) > short_side else 1.0
    if scale == 1.0:
        return height, width
    h, w = round(height * scale), round(width * scale)
    return max(2, h - h % 2), max(2, w - w % 2)


def _resolution_reason(h: int, w: int, opts: CurationOptions) -> str | None:
    short = min(h, w)
    if short < opts.min_resolution:
        return f"resolution {h}x{w}: shorter side {short} < min_resolution={opts.min_resolution}"
    if opts.max_resolution and short > opts.max_resolution:
        return f"resolution {h}x{w}: shorter side {short} > max_resolution={opts.max_resolution}"
    return None


def _clip_reason(duration: float, motion: float, opts: CurationOptions) -> str | None:
    if duration < opts.min_duration:
        return f"duration {duration:.2f}s < min_duration={opts.min_duration}"
    if opts.max_duration and duration > opts.max_duration:
        return f"duration {duration:.2f}s > max_duration={opts.max_duration}"
    if motion < opts.min_motion:
        return f"motion {motion:.4f} < min_motion={opts.min_motion}"
    if opts.max_motion and motion > opts.max_motion:
        return f"motion {motion:.4f} > max_motion={opts.max_motion}"
    return None


def _analyse_video(path: str) -> tuple[np.ndarray, int, int, int]:
    """One decoding pass -> (luma thumbnails [N, h, w], height, width, rotation) in display size."""
    thumbs, first = [], None
    try:
        for index, frame, rotation in video_io.iter_video_frames(path):
            if frame.is_corrupt:
                raise MediaError(f"corrupt frame {index}")
            if first is None:
                first = (frame.height, frame.width, rotation)
                th, tw = scenes.thumbnail_size(frame.height, frame.width)
            thumbs.append(frame.reformat(width=tw, height=th, format="gray").to_ndarray())
    except MediaError as e:
        raise MediaError(f"decode error after {len(thumbs)} frames: {e}" if thumbs else f"unreadable: {e}") from e
    if first is None:
        raise MediaError("no decodable video frames")
    h, w, rotation = first
    if rotation in (90, 270):
        h, w = w, h
    return np.stack(thumbs), h, w, rotation


def _reencode(path: str, ranges: list[tuple[int, int]], size: tuple[int, int], fps: float) -> list[bytes]:
    """Second pass: H.264 mp4 bytes for each frame range, resized to display ``size``."""
    encoders = [None] * len(ranges)
    out: list[bytes] = [b""] * len(ranges)
    for index, frame, rotation in video_io.iter_video_frames(path):
        for i, (start, end) in enumerate(ranges):
            if start <= index < end:
                if encoders[i] is None:
                    encoders[i] = video_io.VideoEncoder(*size, fps)
                encoders[i].add(video_io.frame_to_array(frame, rotation, size))
                if index == end - 1:
                    out[i] = encoders[i].close()
        if index >= ranges[-1][1] - 1:
            break
    for i, encoder in enumerate(encoders):  # a stream that ended early still yields its frames
        if encoder is not None and not out[i]:
            out[i] = encoder.close()
    return out


def _process_video(path: str, rel: str, caption: str, opts: CurationOptions) -> SourceResult:
    try:
        fps, codec = video_io.read_header(path)
    except MediaError as e:
        raise MediaError(f"unreadable: {e}") from e
    thumbs, h, w, rotation = _analyse_video(path)
    if fps <= 0:
        raise MediaError("unknown frame rate")
    reason = _resolution_reason(h, w, opts)
    if reason:
        return SourceResult([], [(rel, reason)])
    cuts = scenes.detect_cuts(thumbs, threshold=opts.cut_threshold) if opts.split_scenes else []
    max_frames = int(round(opts.max_clip_seconds * fps)) if opts.max_clip_seconds else 0
    ranges = scenes.split_ranges(len(thumbs), cuts, max_frames)
    kept, skipped = [], []
    for start, end in ranges:
        motion = scenes.motion_score(thumbs[start:end], fps)
        reason = _clip_reason((end - start) / fps, motion, opts)
        name = rel if len(ranges) == 1 else f"{rel} [frames {start}-{end}]"
        if reason:
            skipped.append((name, reason))
        else:
            kept.append((start, end, motion))
    if not kept:
        return SourceResult([], skipped)
    size = target_size(h, w, opts.resize_short_side)
    if len(ranges) == 1 and size == (h, w):
        with open(path, "rb") as f:
            datas = [f.read()]
        out_size, out_rotation, out_codec = (h, w), rotation, codec
    else:
        datas = _reencode(path, [(s, e) for s, e, _ in kept], size, fps)
        out_size, out_rotation, out_codec = (size[0] - size[0] % 2, size[1] - size[1] % 2), 0, "h264"
    clips = [
        dict(
            kind="video",
            caption=caption,
            source=rel,
            data=data,
            height=out_size[0],
            width=out_size[1],
            num_frames=end - start,
            fps=fps,
            rotation=out_rotation,
            start_frame=start,
            motion=motion,
            codec=out_codec,
        )
        for (start, end, motion), data in zip(kept, datas)
    ]
    return SourceResult(clips, skipped)


def _process_image(path: str, rel: str, caption: str, opts: CurationOptions) -> SourceResult:
    from PIL import Image

    with open(path, "rb") as f:
        raw = f.read()
    image = video_io.open_image(raw)
    h, w = image.height, image.width
    reason = _resolution_reason(h, w, opts)
    if reason:
        return SourceResult([], [(rel, reason)])
    size = target_size(h, w, opts.resize_short_side)
    with Image.open(path) as original:
        unchanged = original.format in ("JPEG", "PNG", "WEBP") and original.size == image.size
        unchanged = unchanged and original.mode in _EIGHT_BIT_MODES  # 16-bit PNGs: stored as 8 bits
        unchanged = unchanged and original.getexif().get(0x0112, 1) == 1  # no EXIF orientation
    if unchanged and size == (h, w):
        data = raw
    else:
        data = video_io.encode_png(video_io.decode_image(raw, size)[0])
    return SourceResult(
        [
            dict(
                kind="image",
                caption=caption,
                source=rel,
                data=data,
                height=size[0],
                width=size[1],
                num_frames=1,
                fps=0.0,
                rotation=0,
                start_frame=0,
                motion=0.0,
                codec="image",
            )
        ],
        [],
    )


def process_source(task: tuple[str, str, str | None, CurationOptions]) -> SourceResult:
    """``(root, rel, caption, options)`` -> clip records and skip reasons; never raises."""
    root, rel, caption, opts = task
    path = os.path.join(root, rel)
    try:
        if caption is None:
            if not opts.allow_missing_captions:
                return SourceResult([], [(rel, "no caption (not in the captions JSONL, no .txt beside it)")])
            caption = ""
        if os.path.getsize(path) == 0:
            return SourceResult([], [(rel, "empty file (0 bytes)")])
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            return _process_image(path, rel, caption, opts)
        return _process_video(path, rel, caption, opts)
    except MediaError as e:
        return SourceResult([], [(rel, str(e))])
    except OSError as e:
        return SourceResult([], [(rel, f"cannot read: {e.strerror or e}")])
    except Exception as e:
        return SourceResult([], [(rel, f"failed: {type(e).__name__}: {e}")])


def index_row(clip: dict[str, Any]) -> dict[str, Any]:
    """The ``shards.INDEX_DTYPE`` fields of a pixel clip record."""
    return dict(
        kind=KINDS.index(clip["kind"]),
        num_frames=clip["num_frames"],
        height=clip["height"],
        width=clip["width"],
        channels=3,
        fps=clip["fps"],
        motion=clip["motion"],
    )
