"""stiv-make-demo-data: write the synthetic moving-shapes demo dataset.

  stiv-make-demo-data --out=DIR [--kind=shapes|orbits] [--num_videos=240] [--seed=0]

``--kind=shapes`` (the demo): ``DIR/videos/NNNNN.mp4`` (H.264, 64x64, 16 frames at 8 fps) of moving
shapes, ``DIR/captions.jsonl`` and the word-level SentencePiece model ``DIR/spm.model`` (see
``stiv_jax.data.synthetic``). ``--kind=orbits`` (multi-view, App. J.3): one video per procedural
object whose frames are its views at equally spaced azimuths (7 by default), with empty captions
(``stiv_jax.data.orbits``); no tokenizer (the multi-view run keeps the demo's).
"""

from __future__ import annotations

import os

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported
from stiv_jax.data import synthetic
from stiv_jax.errors import ConfigError

PROG = "stiv-make-demo-data"


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder.", **d)
    flags.DEFINE_enum("kind", "shapes", ["shapes", "orbits"], "Moving shapes (captioned) or object orbits.", **d)
    flags.DEFINE_integer("num_videos", 240, "Number of clips.", **d)
    flags.DEFINE_integer("seed", 0, "Random seed (the output is a pure function of it).", **d)
    flags.DEFINE_integer("size", 64, "Frame height and width in pixels.", **d)
    flags.DEFINE_integer("num_frames", None, "Frames per clip (orbits: views). Default: 16 (shapes), 7 (orbits).", **d)
    flags.DEFINE_float("fps", 8.0, "Frame rate.", **d)
    flags.mark_flag_as_required("out", flag_values=fv)
    return fv


def check_flags(fv: flags.FlagValues) -> None:
    """:class:`ConfigError` naming the first flag that cannot work (before anything is written)."""
    from stiv_jax.sampling.inputs import check_fps

    for name in ("num_videos", "num_frames", "size"):
        if fv[name].value is not None and fv[name].value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {fv[name].value}")
    check_fps(fv.fps)


def run(argv: list[str] | None = None) -> None:
    """Parses flags and writes the dataset; known errors: one ``error:`` line, exit status 2."""
    fv = flag_utils.parse(_flag_values(), argv, PROG, __doc__)
    with reported(PROG, fv.verbose):
        check_flags(fv)
        captions = os.path.join(fv.out, "captions.jsonl")
        if fv.kind == "orbits":
            from stiv_jax.data import orbits

            entries = orbits.make_orbit_data(fv.out, fv.num_videos, fv.seed, fv.size, fv.num_frames or 7, fv.fps)
            print(f"wrote {len(entries)} object orbits and {captions}")
            return
        entries = synthetic.make_demo_data(fv.out, fv.num_videos, fv.seed, fv.size, fv.num_frames or 16, fv.fps)
    print(f"wrote {len(entries)} videos, {captions} and {os.path.join(fv.out, 'spm.model')}")


if __name__ == "__main__":
    run()
