"""stiv-sample: videos (or images) from a trained STIV run.

  stiv-sample --workdir=DIR --prompt=TEXT [--task=t2v|ti2v|predict|interpolate|long|t2i|upsample|multiview]
      [--image=PNG] [--last_image=PNG] [--video=MP4] [--steps=50]
      [--schedule=linear_quadratic|linear] [--guidance=jit|sit|cfg|none] [--scale=7.5]
      [--num_frames=N] [--seed=S] [--out=FILE.mp4|.gif] [--upsample_with=TUP_WORKDIR]

Uses the EMA weights of the latest checkpoint (``--noema`` / ``--no_ema`` for the raw ones).
Sampler settings not given as flags (steps, schedule, solver, guidance, scales, renorm) are the
run's: its ``config.json`` → ``sampling`` (set in the experiment file), else the built-in defaults.
``--upsample_with`` cascades a temporal upsampler (STIV-TUP, App. J.2; e.g.
experiments/demo_tup.py): the T frames sampled by ``--workdir`` become frames 0, 2, …, 2T − 2 of a
2T − 1-frame clip whose frames in between that run samples, with its own ``sampling`` settings.
``--task=multiview --image=FRONT.png`` (a multi-view run, App. J.3; e.g. experiments/demo_multiview.py)
draws the object's other views, one per frame (the prompt defaults to the empty text it was
trained with); a ``.png`` ``--out`` puts the frames of a clip side by side.
``--prompts_file`` (one prompt per line) samples a batch and writes ``FILE_000.mp4``, … next to
``--out``. Without ``--out``, outputs go to ``DIR/samples/TASK_PROMPT_sSEED.mp4`` (``.png`` for
t2i); ``DIR`` and ``--out`` may be ``gs://`` URLs. Progress and stage timings (load, encode, compile, sample, decode, write) go to stderr;
each written path is printed to stdout (for one output, the last line is its path). The output is
a pure function of the flags: the same seed gives the same file bytes. Prompts longer than
``data.max_text_length`` tokens are cut, with a warning on stderr. Bad flags and inputs (checked
before any model is loaded), a missing or damaged checkpoint: one ``stiv-sample: error:`` line,
exit status 2 (``--verbose`` shows the traceback).
Library equivalent: ``stiv_jax.sampling.pipeline.load_sampler(DIR).generate(...)``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported
from stiv_jax.sampling import cascade, guidance, inputs, pipeline
from stiv_jax.sampling.options import ALL_TASKS, SampleOptions, check_inputs

PROG = "stiv-sample"
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGE_TASKS = ("t2i", "multiview")  # may be written as an image (a clip: its frames side by side)


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    o = SampleOptions()
    flags.DEFINE_string("workdir", None, "stiv-train run directory (config.json + checkpoints/).", **d)
    flags.DEFINE_string("prompt", None, "Text prompt (multiview: default empty).", **d)
    flags.DEFINE_string("prompts_file", None, "File with one prompt per line (a batch).", **d)
    flags.DEFINE_string(
        "out", None, "Output .mp4/.webm/.gif (or .png/.jpg for t2i, multiview); default WORKDIR/samples/.", **d
    )
    flags.DEFINE_enum("task", o.task, list(ALL_TASKS), "What to generate.", **d)
    flags.DEFINE_string(
        "image", None, "First frame (ti2v, interpolate; optional for long); multiview: the front view.", **d
    )
    flags.DEFINE_string("last_image", None, "Last frame (interpolate).", **d)
    flags.DEFINE_string("video", None, "Given frames for predict (first k) / upsample (low-fps clip).", **d)
    flags.DEFINE_integer("video_stride", o.video_stride, "Take every n-th frame of --video.", **d)
    # Sampler settings: unset (None), the run's config.sampling applies (run_options).
    per_run = lambda name: f" Default: the run's sampling.{name}, else {getattr(o, name)}."
    flags.DEFINE_integer("steps", None, "ODE steps." + per_run("steps"), **d)
    flags.DEFINE_enum("schedule", None, ["linear_quadratic", "linear"], "Time grid." + per_run("schedule"), **d)
    flags.DEFINE_integer(
        "emulated_steps", None, "linear_quadratic: emulated linear steps N." + per_run("emulated_steps"), **d
    )
    flags.DEFINE_enum("solver", None, ["euler", "heun"], "ODE solver." + per_run("solver"), **d)
    flags.DEFINE_enum(
        "guidance", None, ["jit", "sit", "cfg", "none"], "Classifier-free guidance." + per_run("guidance"), **d
    )
    flags.DEFINE_float(
        "scale",
        None,
        "Guidance scale (sit: the text scale); 1 = none, 0 = unconditional, "
        f"< 0 away from the prompt; |s| <= {guidance.MAX_SCALE:g}." + per_run("scale"),
        **d,
    )
    flags.DEFINE_float(
        "image_scale", None, "sit: image guidance scale s_img (as --scale)." + per_run("image_scale"), **d
    )
    flags.DEFINE_enum("renorm", None, ["none", "rescale", "clip"], "CFG-renorm." + per_run("renorm"), **d)
    flags.DEFINE_float(
        "high_scale",
        None,
        "Frequency-decoupled guidance: the scale of the high frequencies (the low ones get --scale); "
        "equal to --scale: plain guidance. Default: the run's sampling.high_scale, else off.",
        **d,
    )
    flags.DEFINE_float(
        "split_sigma", None, "Frequency-decoupled guidance: the low-pass std in pixels." + per_run("split_sigma"), **d
    )
    flags.DEFINE_integer("num_frames", None, "Clip length T (default: the training config's).", **d)
    flags.DEFINE_integer("height", None, "Height in pixels (default: data.resolution).", **d)
    flags.DEFINE_integer("width", None, "Width in pixels (default: data.resolution).", **d)
    flags.DEFINE_integer("frame_stride", None, "Frame-stride micro-condition (default: data.frame_strides[0]).", **d)
    flags.DEFINE_integer("predict_frames", None, "predict: number of given frames k.", **d)
    flags.DEFINE_integer("long_keyframes", None, "long: number of keyframes K (default: T).", **d)
    flags.DEFINE_integer("seed", o.seed, "Random seed.", **d)
    flags.DEFINE_integer("batch_size", None, "Prompts per program run (default: all at once).", **d)
    flags.DEFINE_float(
        "fps",
        8.0,
        f"Frame rate of the written video, in [{inputs.FPS_RANGE[0]:g}, "
        f"{inputs.FPS_RANGE[1]:g}] ({inputs.GIF_MAX_FPS:g} for .gif).",
        **d,
    )
    flags.DEFINE_bool("ema", True, "Use the EMA weights (--noema: the raw ones).", **d)
    flags.DEFINE_bool("no_ema", False, "Same as --noema.", **d)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", **d)
    flags.DEFINE_string(
        "tokenizer_path",
        None,
        "Tokenizer file: the SentencePiece model (t5) or BPE vocabulary (clip) (default: data.tokenizer_path).",
        **d,
    )
    flags.DEFINE_string("text_encoder", None, "stiv-import text-encoder dir (runs on cached text).", **d)
    flags.DEFINE_string(
        "upsample_with", None, "A temporal-upsampler run (task upsample) that doubles the frame rate.", **d
    )
    flags.mark_flags_as_required(["workdir"], flag_values=fv)
    return fv


def read_prompts(prompt: str | None, prompts_file: str | None, task: str = "t2v") -> list[str]:
    """``--prompt`` or the non-empty lines of ``--prompts_file`` (exactly one of them; multiview
    without either: the empty prompt)."""
    if task == "multiview" and prompt is None and prompts_file is None:
        return [""]
    if (prompt is None) == (prompts_file is None):
        raise ValueError("give exactly one of --prompt and --prompts_file")
    if prompt is not None:
        return [prompt]
    if not os.path.isfile(prompts_file):
        raise FileNotFoundError(f"--prompts_file {prompts_file!r}: no such file")
    with open(prompts_file, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts_file {prompts_file!r} has no prompts")
    return prompts


def default_out(workdir: str, prompt: str, task: str, seed: int) -> str:
    """``WORKDIR/samples/TASK_PROMPT_sSEED.mp4`` (``.png`` for t2i), the prompt made a file name."""
    from stiv_jax.storage.workdir import Workdir

    slug = "".join(c if c.isalnum() else "_" for c in prompt.lower()).strip("_")[:60] or "prompt"
    return Workdir(workdir).sample_path(f"{task}_{slug}_s{seed}{'.png' if task == 't2i' else '.mp4'}")


def output_paths(out: str, count: int, task: str) -> list[str]:
    """``out`` for one output, else ``STEM_000.EXT``, ``STEM_001.EXT``, …"""
    stem, ext = os.path.splitext(out)
    allowed = VIDEO_EXTENSIONS + (IMAGE_EXTENSIONS if task in IMAGE_TASKS else ())
    if ext.lower() not in allowed:
        raise ValueError(f"--out {out!r}: extension must be one of {', '.join(allowed)}")
    if count == 1:
        return [out]
    return [f"{stem}_{i:03d}{ext}" for i in range(count)]


def write_output(path: str, frames, fps: float) -> str:
    """Writes ``uint8 [T, H, W, 3]`` as a video, or as an image of its frames side by side (local or gs://)."""
    from PIL import Image

    from stiv_jax.data import video_io
    from stiv_jax.storage import paths

    with paths.staged_file(path) as local:
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            Image.fromarray(np.concatenate(list(frames), axis=1)).save(local)
        else:
            video_io.write_video(local, frames, fps)
    return path


def check_upsampler(workdir: str, task: str) -> None:
    """Fails fast (before any model loads) on an ``--upsample_with`` the cascade cannot use."""
    from stiv_jax.storage.workdir import Workdir

    if task == "t2i":
        raise ValueError("--upsample_with needs a video task, not t2i")
    if not Workdir(workdir).has_config():
        raise FileNotFoundError(f"--upsample_with {workdir!r}: no stiv-train run there (no config.json)")


def run_options(fv: flags.FlagValues) -> SampleOptions:
    """The flags given, over the run's ``config.sampling`` (read from ``--workdir``'s config.json
    without loading a model), over the built-in defaults."""
    from stiv_jax.storage.workdir import Workdir

    names = [f.name for f in dataclasses.fields(SampleOptions)]
    given = {n: fv[n].value for n in names if fv[n].value is not None}
    wd = Workdir(fv.workdir)
    config = wd.load_config() if wd.has_config() else None  # none: load_sampler names the problem
    return SampleOptions.for_run(config, **given)


def run(argv: list[str] | None = None) -> list[str]:
    """Parses flags, samples, writes; returns the written paths (also printed to stdout)."""
    fv = flag_utils.parse(_flag_values(), argv, PROG, __doc__)
    log = lambda msg: print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    with reported(PROG, fv.verbose):
        options = run_options(fv)
        options.validate()  # cheap checks first: no model is loaded for a bad command line
        given = dict(image=fv.image, last_image=fv.last_image, video=fv.video)
        check_inputs(options.task, **given)
        if fv.upsample_with is not None:
            check_upsampler(fv.upsample_with, options.task)
        prompts = read_prompts(fv.prompt, fv.prompts_file, options.task)
        out = fv.out or default_out(fv.workdir, prompts[0], options.task, options.seed)
        paths = output_paths(out, len(prompts), options.task)
        inputs.check_fps(fv.fps, gif=out.lower().endswith(".gif"))
        ema = fv.ema and not fv.no_ema
        sampler = pipeline.load_sampler(
            fv.workdir,
            ema=ema,
            step=fv.step,
            tokenizer_path=fv.tokenizer_path,
            text_checkpoint=fv.text_encoder,
            log=log,
        )
        videos = sampler.generate(prompts, options, **given)
        if fv.upsample_with is not None:
            upsampler = pipeline.load_sampler(fv.upsample_with, ema=ema, log=log)
            videos = cascade.upsample(upsampler, prompts, videos, seed=options.seed, batch_size=options.batch_size)
        start = time.perf_counter()
        for path, video in zip(paths, videos):
            write_output(path, video, fv.fps)
        log(f"write={time.perf_counter() - start:.2f}s")
    for path in paths:
        print(path, flush=True)
    return paths


def main() -> None:
    """Console entry point: exit status 0 on success (``run`` returns the paths, for Python)."""
    run()


if __name__ == "__main__":
    main()
