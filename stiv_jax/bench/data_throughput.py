"""Input-pipeline throughput: decoded training clips per second for several worker counts.

  python -m stiv_jax.bench.data_throughput [--num_videos=64] [--size=128] [--source_frames=48]
      [--num_frames=16] [--resolution=96] [--workers=0,2] [--batches=20]

Renders the synthetic dataset at ``--size`` (H.264 mp4, ``--source_frames`` at 24 fps), writes
shards, then times the pixel pipeline (decode + random stride/crop/resize + normalise + tokenize
+ batch) after a warm-up. One line per configuration, e.g. ``workers=2 clips_per_s=123.4``.
Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import flags

from stiv_jax.bench import timing
from stiv_jax.console import flag_utils
from stiv_jax.data import config as data_config
from stiv_jax.data import pipeline, synthetic
from stiv_jax.data.ingest import make_shards


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "Where to write the dataset (default: a temporary folder).", **d)
    flags.DEFINE_integer("num_videos", 64, "Clips in the benchmark dataset.", **d)
    flags.DEFINE_integer("size", 128, "Source frame size (square).", **d)
    flags.DEFINE_integer("source_frames", 48, "Frames per source clip (24 fps).", **d)
    flags.DEFINE_integer("num_frames", 16, "Frames per training clip.", **d)
    flags.DEFINE_integer("resolution", 96, "Training crop size.", **d)
    flags.DEFINE_integer("batch_size", 8, "Clips per batch.", **d)
    flags.DEFINE_list("workers", ["0", "2"], "Worker counts to time.", **d)
    flags.DEFINE_integer("read_threads", 1, "Read-ahead threads per process.", **d)
    flags.DEFINE_integer("batches", 20, "Timed batches per configuration.", **d)
    flags.DEFINE_integer("warmup", 3, "Untimed batches first (worker start-up).", **d)
    return fv


def time_pipeline(cfg, batch_size: int, batches: int, warmup: int) -> float:
    """Clips per second over ``batches`` batches after ``warmup`` batches."""
    it = pipeline.make_iterator(cfg, batch_size=batch_size)
    try:
        for _ in range(warmup):
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        if hasattr(it, "close"):
            it.close()


def run(argv: list[str] | None = None) -> None:
    fv = flag_utils.parse(_flag_values(), argv, "data_throughput")
    workdir = fv.workdir or tempfile.mkdtemp(prefix="stiv_data_bench_")
    src, out = os.path.join(workdir, "videos"), os.path.join(workdir, "shards")
    start = time.perf_counter()
    synthetic.make_demo_data(src, fv.num_videos, seed=0, size=fv.size, num_frames=fv.source_frames, fps=24.0)
    manifest = make_shards(src, out, os.path.join(src, "captions.jsonl"), log=lambda _: None)
    print(
        f"dataset: {manifest['num_records']} clips of {fv.source_frames}x{fv.size}x{fv.size} "
        f"({manifest['total_bytes'] / 1e6:.1f} MB) prepared in {time.perf_counter() - start:.1f}s"
    )
    lines: list[str] = []  # printed at the end, the last one with the machine's load
    for workers in (int(w) for w in fv.workers):
        cfg = data_config.get_data_config()
        cfg.path, cfg.tokenizer_path = out, os.path.join(src, "spm.model")
        cfg.num_frames, cfg.resolution, cfg.frame_strides = fv.num_frames, fv.resolution, (1, 2, 3)
        cfg.num_workers, cfg.read_threads, cfg.prefetch = workers, fv.read_threads, 2
        rate = time_pipeline(cfg, fv.batch_size, fv.batches, fv.warmup)
        lines.append(
            f"workers={workers} read_threads={fv.read_threads} clip={fv.num_frames}x{fv.resolution}x{fv.resolution} "
            f"clips_per_s={rate:.1f}"
        )
    for line in lines[:-1]:
        print(line)
    timing.headline(lines[-1])


if __name__ == "__main__":
    run()
