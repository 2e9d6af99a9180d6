"""The videos an evaluation reads: a folder of video (or image) files, or a clip-shard folder.

A folder is walked like ``stiv-make-shards`` walks its input (the same extensions, sorted relative
paths, hidden entries skipped); a caption comes from a same-named ``.txt`` beside a file when there
is one; a file that cannot be decoded is left out with a warning. A shard folder (``manifest.json`` of ``stiv-make-shards``) gives its records in key order,
each with its caption. Images are one-frame videos. Every video is ``uint8 [T, H, W, 3]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from stiv_jax.data import clips, shards, video_io
from stiv_jax.errors import UserError, one_line
from stiv_jax.storage import paths


class Video(NamedTuple):
    name: str  # relative path, or shard record key
    frames: np.ndarray  # uint8 [T, H, W, 3]
    caption: str


def is_shard_folder(path: str) -> bool:
    return paths.exists(paths.join(path, "manifest.json"))


def _shard_videos(path: str) -> Iterator[Video]:
    import grain

    source = grain.sources.ArrayRecordDataSource(shards.shard_paths(path, "--real/--fake"))
    for i in range(len(source)):
        rec = shards.decode_record(source[i])
        data = rec["data"]
        frames = video_io.decode_image(data) if rec.get("kind") == "image" else video_io.decode_video(data)
        yield Video(str(rec.get("key", i)), frames, str(rec.get("caption", "")))


def _folder_videos(path: str, warn: Callable[[str], None]) -> Iterator[Video]:
    for rel in clips.find_media(path):
        full = os.path.join(path, rel)
        try:
            if rel.lower().endswith(video_io.IMAGE_EXTENSIONS):
                frames = video_io.decode_image(full)  # a one-frame clip [1, H, W, 3]
            else:
                frames = video_io.decode_video(full)
        except Exception as e:
            warn(f"skipped {full}: {one_line(e)}")
            continue
        txt = os.path.splitext(full)[0] + ".txt"
        caption = clips.read_caption_file(txt, warn) if os.path.isfile(txt) else ""
        yield Video(rel, frames, caption)


def check_source(path: str) -> None:
    """``UserError`` naming ``path`` unless it is a folder (of videos, or of shards)."""
    if not (is_shard_folder(path) or os.path.isdir(path)):
        raise UserError(f"{path}: neither a folder of videos nor a shard folder (no manifest.json)")


def iter_videos(path: str, limit: int | None = None, warn: Callable[[str], None] | None = None) -> Iterator[Video]:
    """The videos under ``path`` (at most ``limit``); a file that cannot be decoded is left out and
    named through ``warn`` (default: stderr); ``UserError`` naming ``path`` if no video is left."""
    check_source(path)
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
    source = _shard_videos(path) if is_shard_folder(path) else _folder_videos(path, warn)
    count = 0
    for video in source:
        if limit is not None and count >= limit:
            return
        count += 1
        yield video
    if not count:
        exts = " ".join(video_io.VIDEO_EXTENSIONS + video_io.IMAGE_EXTENSIONS)
        raise UserError(f"{path}: no videos or images ({exts})")
