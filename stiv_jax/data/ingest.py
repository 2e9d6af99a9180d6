"""Folder of videos/images + captions → ArrayRecord clip shards (what ``stiv-make-shards`` runs).

Walks the input folder (mp4/webm/mov/mkv/avi/m4v videos, jpg/png/webp/bmp images), takes each
file's caption from a captions JSONL (``{"video": "rel/path", "caption": "..."}`` lines) or from a
same-named ``.txt`` beside it, probes and scene-splits every video (§3.3 curation), filters clips and
writes ``clips-*.array_record`` + ``index.npy`` + ``manifest.json`` (:mod:`stiv_jax.data.shards`).
A run that keeps no clip raises ``UserError`` and leaves the output folder as it was. Output is
deterministic: the same input gives byte-identical shards, with any number of workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys

import numpy as np

from stiv_jax.data import clips, scenes, shards
from stiv_jax.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from stiv_jax.errors import UserError
from stiv_jax.storage import paths

_SIZE_BINS = (0, 128, 256, 360, 480, 720, 1080, 2160)
_DURATION_BINS = (0, 1, 2, 4, 8, 16, 32, 64)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _nothing_written(input_dir: str, out_dir: str, num_files: int, skipped: list[dict]) -> UserError:
    if not num_files:
        exts = " ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
        return UserError(f"nothing written to {out_dir}: no videos or images ({exts}) under --input {input_dir}")
    first = skipped[0] if skipped else {"file": "?", "reason": "?"}
    return UserError(
        f"nothing written to {out_dir}: none of the {num_files} input files gave a clip ({len(skipped)} skipped, "
        f"the first: {first['file']}: {first['reason']}); the 'skipped' lines above give each reason"
    )


def _histogram(values, edges) -> dict:
    counts = np.histogram(values, bins=[*edges, np.inf])[0] if len(values) else np.zeros(len(edges), int)
    return {"bin_edges": list(edges), "counts": [int(c) for c in counts]}


def make_shards(
    input_dir: str,
    out_dir: str,
    captions_path: str | None = None,
    options: clips.CurationOptions = clips.CurationOptions(),
    records_per_shard: int = 1000,
    num_workers: int = 0,
    log=print,
    warn=_warn,
) -> dict:
    """Writes the shard folder and returns its manifest (see module docstring); ``UserError``
    when no clip is kept (nothing is written then)."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"--input {input_dir!r} is not a folder")
    captions = clips.load_captions(captions_path) if captions_path else {}
    rels = clips.find_media(input_dir, exclude=None if paths.is_remote(out_dir) else out_dir)
    unmatched = sorted(set(captions) - {os.path.normpath(r) for r in rels})
    if unmatched:
        names = ", ".join(unmatched[:5]) + (", …" if len(unmatched) > 5 else "")
        warn(f"{len(unmatched)} caption(s) in {captions_path} name files not under --input: {names}")
    tasks = [(input_dir, rel, clips.caption_for(input_dir, rel, captions, warn), options) for rel in rels]
    writer = None  # started with the first clip, so a run that keeps nothing leaves out_dir alone
    skipped, written = [], []
    pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 0 else None
    try:
        results = pool.imap(clips.process_source, tasks) if pool else map(clips.process_source, tasks)
        for i, result in enumerate(results):
            for clip in result.clips:
                writer = writer or shards.ShardWriter(out_dir, "clips", records_per_shard)
                writer.write(clip, clips.index_row(clip))
                written.append(clip)
            for name, reason in result.skipped:
                skipped.append({"file": name, "reason": reason})
                log(f"skipped {name}: {reason}")
            if (i + 1) % 500 == 0:
                print(f"processed {i + 1}/{len(tasks)} files", file=sys.stderr)
    finally:
        if pool:
            pool.close()
            pool.join()
    if writer is None:
        raise _nothing_written(input_dir, out_dir, len(rels), skipped)
    shard_list = writer.close()
    videos = [c for c in written if c["kind"] == "video"]
    manifest = {
        "format": "stiv_jax.clips.v1",
        "num_records": len(written),
        "num_skipped": len(skipped),
        "num_source_files": len(rels),
        "kinds": {k: sum(c["kind"] == k for c in written) for k in ("video", "image")},
        "total_bytes": sum(s["bytes"] for s in shard_list),
        "total_frames": sum(c["num_frames"] for c in videos),
        "total_seconds": round(sum(c["num_frames"] / c["fps"] for c in videos), 3),
        "motion_histogram": scenes.motion_histogram([c["motion"] for c in videos]),
        "duration_histogram": _histogram([c["num_frames"] / c["fps"] for c in videos], _DURATION_BINS),
        "short_side_histogram": _histogram([min(c["height"], c["width"]) for c in written], _SIZE_BINS),
        "captions_without_file": len(unmatched),
        "shards": shard_list,
        "skipped": skipped,
        "settings": {**dataclasses.asdict(options), "records_per_shard": records_per_shard},
    }
    shards.write_manifest(out_dir, manifest)
    return manifest
