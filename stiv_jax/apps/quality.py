"""The demo's quality as FVD (the paper's video metric, §3; stiv_jax/eval/fvd.py's protocol).

Three numbers over the same prompts, all against held-out real clips (rendered with a render seed
the training data did not use, then read exactly as the data pipeline reads a training clip):
the trained model's T2V samples; the floor, real clips of a second render seed (what a perfect
model would score with this many clips); and the ceiling, the same prompts sampled by the untrained
model (the run's initial weights). A trained model should sit far nearer the floor.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np
from flax import nnx

from stiv_jax.apps.report import render_prompt
from stiv_jax.data import synthetic, video_io
from stiv_jax.eval.evaluate import Evaluator
from stiv_jax.eval.fvd import PROTOCOL
from stiv_jax.model.dit import STIV

REFERENCE_SEED, FLOOR_SEED = 101, 202  # render seeds of the held-out real clips (training used 0)
SOURCE_FRAMES, SOURCE_SIZE = 16, 64  # as make_demo_data renders the training videos


def read_like_training(videos: Iterable[np.ndarray], indices: Sequence[int], resolution: int, fps: float) -> np.ndarray:
    """``uint8 [N, len(indices), R, R, 3]``: each rendered ``uint8 [T, H, W, 3]`` video written as an
    H.264 mp4 (as the demo datasets are) and decoded back like a training clip: frames ``indices``
    at ``resolution``²."""
    clips = []
    with tempfile.TemporaryDirectory(prefix="stiv_demo_real_") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        for frames in videos:
            video_io.write_video(path, frames, fps)
            clips.append(video_io.decode_video(path, list(indices), size=(resolution, resolution)))
    return np.stack(clips)


def real_clips(prompts: Sequence[str], config: ml_collections.ConfigDict, seed: int) -> np.ndarray:
    """``uint8 [N, T, R, R, 3]``: one clip per prompt rendered like the demo data and read like a
    training clip (:func:`read_like_training`): frames 0, s, 2s, … (``s = data.frame_strides[0]``)
    at ``data.resolution``; a prompt's clip depends only on it and ``seed``."""
    d = config.data
    indices = [i * d.frame_strides[0] for i in range(d.num_frames)]
    videos = (render_prompt(prompt, seed, SOURCE_SIZE, SOURCE_FRAMES) for prompt in prompts)
    return read_like_training(videos, indices, d.resolution, synthetic.FPS)


def initial_model(config: ml_collections.ConfigDict) -> STIV:
    """The run's weights before its first step (``train/step.py: init_state``)."""
    return STIV(config.model, rngs=nnx.Rngs(params=config.seed))


def fvd_report(
    sampler,
    trained: np.ndarray,
    prompts: Sequence[str],
    options,
    *,
    batch: int = 20,
    evaluator: Evaluator | None = None,
) -> dict:
    """FVD of ``trained`` (the samples of ``prompts``) and of the floor and the ceiling (module
    docstring); the ceiling samples ``prompts`` with ``options`` from the initial weights, ``batch``
    prompts per call as ``trained`` was sampled (the same noise) and through the I3D."""
    evaluator = evaluator or Evaluator(("fvd",), batch_size=batch)
    config = sampler.config
    reference = evaluator.features(real_clips(prompts, config, REFERENCE_SEED))
    floor = evaluator.features(real_clips(prompts, config, FLOOR_SEED))
    trained_model = sampler.model
    try:
        sampler.model = initial_model(config)
        prompts = list(prompts)
        untrained = np.concatenate(
            [sampler.generate(prompts[i : i + batch], options) for i in range(0, len(prompts), batch)]
        )
    finally:
        sampler.model = trained_model
    ceiling = evaluator.features(list(untrained))
    fvd = {
        "trained": evaluator.distances(reference, evaluator.features(list(trained)))["fvd"],
        "real_vs_real": evaluator.distances(reference, floor)["fvd"],
        "untrained": evaluator.distances(reference, ceiling)["fvd"],
    }
    return dict(
        fvd=fvd,
        num_clips=len(prompts),
        protocol=PROTOCOL,
        real_render_seeds=dict(reference=REFERENCE_SEED, floor=FLOOR_SEED),
    )
