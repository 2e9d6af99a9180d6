"""stiv-make-shards: a folder of videos/images + captions -> ArrayRecord clip shards.

  stiv-make-shards --input=DIR --out=DIR [--captions=FILE.jsonl] [--min_duration=1 ...]

Walks ``--input`` (mp4/webm/mov/mkv/avi/m4v videos, jpg/png/webp/bmp images), takes each file's
caption from ``--captions`` (``{"video": "rel/path", "caption": "..."}`` lines) or from a
same-named ``.txt`` beside it, probes and scene-splits every video, filters clips, and writes
``clips-*.array_record`` + ``index.npy`` + ``manifest.json`` (see ``stiv_jax.data.shards``).
Prints each skipped file/clip with its reason and a final ``written=N skipped=M`` line; warnings
(captions naming missing files, ``.txt`` captions that are not UTF-8) go to stderr. A run that
keeps no clip fails (``stiv-make-shards: error: nothing written …``, exit status 2) and leaves
``--out`` as it was: the writer only starts, clearing earlier shards, with the first clip.
Output is deterministic: the same input gives byte-identical shards, with any ``--num_workers``.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported
from stiv_jax.data import clips
from stiv_jax.data.ingest import make_shards

PROG = "stiv-make-shards"


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("input", None, "Folder of videos and images (searched recursively).", **d)
    flags.DEFINE_string("out", None, "Output folder for the shards (local or gs://).", **d)
    flags.DEFINE_string("captions", None, 'JSONL of {"video": "rel/path", "caption": "..."} lines.', **d)
    flags.DEFINE_integer("records_per_shard", 1000, "Clips per ArrayRecord shard.", **d)
    flags.DEFINE_integer("num_workers", 0, "Processes that probe/split/encode files (0: in-process).", **d)
    flags.DEFINE_bool("split_scenes", True, "Split videos at hard cuts.", **d)
    flags.DEFINE_float("cut_threshold", 30.0, "Mean luma change (0-255) that counts as a cut.", **d)
    flags.DEFINE_float("max_clip_seconds", 0.0, "Chop longer scenes into pieces this long (0: off).", **d)
    flags.DEFINE_float("min_duration", 0.0, "Drop clips shorter than this (seconds).", **d)
    flags.DEFINE_float("max_duration", 0.0, "Drop clips longer than this (seconds; 0: no limit).", **d)
    flags.DEFINE_integer("min_resolution", 0, "Drop files whose shorter side is below this.", **d)
    flags.DEFINE_integer("max_resolution", 0, "Drop files whose shorter side exceeds this (0: off).", **d)
    flags.DEFINE_float("min_motion", 0.0, "Drop clips with a lower motion score (0..1).", **d)
    flags.DEFINE_float("max_motion", 0.0, "Drop clips with a higher motion score (0: off).", **d)
    flags.DEFINE_integer("resize_short_side", 0, "Re-encode larger clips to this shorter side (0: off).", **d)
    flags.DEFINE_bool("allow_missing_captions", False, "Keep files without a caption (empty caption).", **d)
    flags.mark_flags_as_required(["input", "out"], flag_values=fv)
    return fv


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def run(argv: list[str] | None = None) -> None:
    fv = flag_utils.parse(_flag_values(), argv, PROG)
    with reported(PROG, fv.verbose):
        names = [f.name for f in dataclasses.fields(clips.CurationOptions)]
        options = clips.CurationOptions(**{n: fv[n].value for n in names})
        manifest = make_shards(fv.input, fv.out, fv.captions, options, fv.records_per_shard, fv.num_workers, warn=_warn)
    print(f"written={manifest['num_records']} skipped={manifest['num_skipped']}")


if __name__ == "__main__":
    run()
