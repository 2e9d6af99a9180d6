"""Frame-level FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium"): every frame of every video is one image; FID is the Fréchet distance of
Gaussians fitted to the InceptionV3 pool3 features (2048-d) of the real and generated frames.

Features: :class:`InceptionFeatures` (stiv_jax/eval/inception.py, the TF-FID network in pytorch-fid's
layout; preprocessing pinned by ``resize``, by default TF-FID's own). Distance:
stiv_jax/eval/frechet.py, in float64. The protocol is spelled out in :data:`PROTOCOL`, to be written
next to every reported number.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.eval import frechet
from stiv_jax.eval.inception import FEATURE_DIM, INPUT_SIZE, RESIZES, InceptionV3, load_inception, preprocess

PROTOCOL: dict[str, Any] = {
    "metric": "fid",
    "reference": "Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
    "input": "uint8 RGB frames: every frame of every video [B, T, H, W, 3] -> [B*T, H, W, 3]",
    "size": INPUT_SIZE,
    "resize": "tf1: TF 1.x ResizeBilinear (align_corners=False, no half-pixel centres) of uint8 values, no crop",
    "range": "[-1, 1] ((x - 128) / 128), float32",
    "features": "InceptionV3 pool3, 2048-d",
    "network": "TF-FID InceptionV3 (pt_inception-2015-12-05), pytorch-fid fid_inception_v3 layout",
    "precision": "float32, convolutions at Precision.HIGHEST",
    "statistics": "float64 mean and unbiased covariance; squared Frechet distance",
}
_PYTORCH_FID_INPUT = {
    "resize": "pytorch-fid: bilinear, half-pixel centres, no antialias (F.interpolate align_corners=False), no crop",
    "range": "[-1, 1] (2 * x / 255 - 1), float32",
}


def frames_of(videos: np.ndarray) -> np.ndarray:
    """``[B, T, H, W, C] -> [B·T, H, W, C]`` (video-major: video 0's frames first)."""
    chex.assert_rank(videos, 5)
    b, t, *rest = videos.shape
    return np.asarray(videos).reshape(b * t, *rest)


@jax.jit
def _features(model: InceptionV3, x: jax.Array) -> jax.Array:
    return model(x)


class InceptionFeatures:
    """``frames uint8 [N, H, W, 3] -> float64 [N, 2048]`` pool3 features, in jitted batches.

    Frames go through the device in chunks of ``min(batch_size, N)`` (the last chunk padded), so the
    network compiles once per chunk size; the resize to 299×299 compiles once per input size.
    """

    def __init__(self, model: InceptionV3, *, batch_size: int = 32, resize: str = "tf1"):
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size, self.resize = model, batch_size, resize
        self._preprocess = jax.jit(lambda x: preprocess(x, resize))

    @property
    def protocol(self) -> dict[str, Any]:
        """:data:`PROTOCOL`, with the input rules of this extractor's ``resize``."""
        return PROTOCOL | (_PYTORCH_FID_INPUT if self.resize == "pytorch-fid" else {})

    @classmethod
    def load(cls, path: str, **kwargs) -> InceptionFeatures:
        """From the FID weight file (see :func:`stiv_jax.eval.inception.load_inception`)."""
        return cls(load_inception(path), **kwargs)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        chex.assert_rank(frames, 4)
        chex.assert_axis_dimension(frames, 3, 3)
        if frames.dtype != np.uint8:
            raise TypeError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype}")
        batch, out = max(1, min(self.batch_size, len(frames))), []
        for start in range(0, len(frames), batch):
            chunk = frames[start : start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.uint8)])
            with jax.default_matmul_precision("highest"):
                feats = _features(self.model, self._preprocess(jnp.asarray(chunk)))
            out.append(np.asarray(feats, np.float64)[:n])
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float64)


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FID of two feature sets ``[N, D]``, ``[M, D]`` (N, M ≥ 2), via :mod:`stiv_jax.eval.frechet`."""
    chex.assert_rank([real_features, fake_features], 2)
    return frechet.frechet_distance_of(real_features, fake_features)


def frame_fid(real_videos: np.ndarray, fake_videos: np.ndarray, features: InceptionFeatures) -> float:
    """FID between the frames of ``real_videos`` and ``fake_videos`` (uint8 ``[B, T, H, W, 3]``)."""
    return fid(features(frames_of(real_videos)), features(frames_of(fake_videos)))
