"""The T2V → STIV-TUP cascade (App. J.2): a temporal upsampler doubles a clip's frame rate.

A TUP run is trained with every other frame given (task ``upsample``: frames 0, 2, 4, …). Given
a ``T``-frame clip, the cascade places its frames at 0, 2, …, 2T − 2 of a ``2T − 1``-frame clip
and samples the ``T − 1`` frames in between; the given frames come back unchanged (exactly, with
a lossless autoencoder). The upsampler samples with its own run's ``sampling`` settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import numpy as np

from stiv_jax.sampling.options import SampleOptions


def upsampled_frames(num_frames: int) -> int:
    """Frames of the upsampled clip: ``2T − 1`` (the ``T`` given ones and one between each pair)."""
    if num_frames < 2:
        raise ValueError(f"the cascade needs clips of >= 2 frames, got {num_frames}")
    return 2 * num_frames - 1


def upsample(
    upsampler,
    prompts: Sequence[str],
    videos: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int | None = None,
) -> np.ndarray:
    """``uint8 [B, T, H, W, 3]`` clips of ``prompts`` → ``uint8 [B, 2T − 1, H, W, 3]`` from the
    TUP run loaded as ``upsampler`` (a :class:`~stiv_jax.sampling.pipeline.Sampler`)."""
    videos = np.asarray(videos)
    chex.assert_rank(videos, 5)
    if videos.shape[0] != len(prompts):
        raise ValueError(f"{videos.shape[0]} videos for {len(prompts)} prompts")
    frames = upsampled_frames(videos.shape[1])
    trained = upsampler.config.data.num_frames
    if frames != trained:
        upsampler.log(f"upsampler: {frames} frames; its run trained on {trained}")
    options = SampleOptions.for_run(
        upsampler.config,
        task="upsample",
        num_frames=frames,
        height=videos.shape[2],
        width=videos.shape[3],
        seed=seed,
        batch_size=batch_size,
    )
    out = upsampler.generate(list(prompts), options, video=videos)
    chex.assert_shape(out, (videos.shape[0], frames, *videos.shape[2:]))
    return out
