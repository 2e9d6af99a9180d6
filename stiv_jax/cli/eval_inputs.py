"""The inputs of ``stiv-eval`` besides the real videos: generated videos (read, or sampled from a run
with a progress bar) and the CLIP scorer."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator

from absl import flags

from stiv_jax.errors import ConfigError
from stiv_jax.eval.videos import Video, iter_videos


@contextlib.contextmanager
def progress_bar(what: str, total: int | None) -> Iterator:
    from tqdm import tqdm

    with tqdm(total=total, desc=what, unit="video", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar


def read_prompts(path: str) -> list[str]:
    from stiv_jax.storage import paths

    if not paths.exists(path):
        raise ConfigError(f"--prompts={path}: no such file")
    prompts = [line.strip() for line in paths.read_text(path).splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"--prompts={path}: no prompts (one per line)")
    return prompts


def sample(fv: flags.FlagValues) -> list[Video]:
    """``--num_samples`` videos sampled from ``--workdir``: prompt i is line ``i mod len(lines)``; the
    chunk starting at video i uses seed ``--seed + i`` (same inputs, same videos)."""
    from stiv_jax.data import video_io
    from stiv_jax.sampling.options import SampleOptions
    from stiv_jax.sampling.pipeline import load_sampler

    prompts = read_prompts(fv.prompts)
    n = fv.num_samples or len(prompts)
    sampler = load_sampler(fv.workdir, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    options = SampleOptions.for_run(sampler.config, **({"steps": fv.steps} if fv.steps else {}))
    if fv.save_samples:
        os.makedirs(fv.save_samples, exist_ok=True)
    videos: list[Video] = []
    with progress_bar("sampling", n) as bar:
        for start in range(0, n, fv.batch_size):
            chunk = [prompts[i % len(prompts)] for i in range(start, min(n, start + fv.batch_size))]
            frames = sampler.generate(chunk, dataclasses.replace(options, seed=fv.seed + start))
            for i, (prompt, video) in enumerate(zip(chunk, frames)):
                name = f"{start + i:05d}.mp4"
                if fv.save_samples:
                    video_io.write_video(os.path.join(fv.save_samples, name), video, 8.0)
                    with open(os.path.join(fv.save_samples, f"{start + i:05d}.txt"), "w") as f:
                        f.write(prompt)
                videos.append(Video(name, video, prompt))
            bar.update(len(chunk))
    return videos


def fake_videos(fv: flags.FlagValues) -> list[Video]:
    if fv.workdir:
        return sample(fv)
    return list(iter_videos(fv.fake, fv.max_videos))


def scorer(fv: flags.FlagValues) -> Callable[[list[Video]], float]:
    """CLIP score of videos with their prompts/captions (``--clip`` and ``--clip_vision``)."""
    if not fv.clip or not fv.clip_vision:
        raise ConfigError("--metrics=clipscore needs --clip (stiv-import --kind=clip) and --clip_vision")
    from stiv_jax.eval import clip_score

    return clip_score.scorer(fv.clip, fv.clip_vision, batch_size=fv.batch_size)
