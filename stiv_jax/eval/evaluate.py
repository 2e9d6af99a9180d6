"""Metrics of a set of generated videos against real ones: what ``stiv-eval``, evaluation during
training and the demo report compute.

``fvd``: Fréchet distance of I3D Kinetics-400 logits (``stiv_jax.eval.fvd``, its pinned protocol);
``fid``: frame-level Fréchet distance of InceptionV3 pool features (``stiv_jax.eval.fid``, weights
given by the user); ``clipscore``: 100 · cos(prompt, frame) of CLIP, averaged over frames and
videos (``stiv_jax.eval.clip_score``; needs the prompts of the generated videos). Every number is
written next to the protocol that produced it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from stiv_jax.errors import ConfigError

METRICS = ("fvd", "fid", "clipscore")
Progress = Callable[[int], None]  # called with the number of videos just read


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METRICS]
    if not names or unknown:
        raise ConfigError(f"--metrics={text!r}: choose from {','.join(METRICS)}")
    return names


def same_shape_batches(
    videos: Iterable[np.ndarray], batch_size: int, progress: Progress | None = None
) -> Iterator[np.ndarray]:
    """Consecutive videos of one shape stacked into batches of at most ``batch_size``."""
    pending: list[np.ndarray] = []
    for video in videos:
        if pending and (video.shape != pending[0].shape or len(pending) == batch_size):
            yield np.stack(pending)
            pending = []
        pending.append(np.asarray(video, np.uint8))
        if progress:
            progress(1)
    if pending:
        yield np.stack(pending)


class Evaluator:
    """Feature extractors built once (an I3D for ``fvd``, an InceptionV3 for ``fid``) and reused for
    every set of videos; :meth:`features` reads a set once for all asked metrics."""

    def __init__(
        self,
        metrics: Sequence[str],
        *,
        batch_size: int = 8,
        mesh: Any = None,
        i3d_weights: str | None = None,
        inception_weights: str | None = None,
    ):
        self.metrics = tuple(m for m in metrics if m in ("fvd", "fid"))
        self.batch_size = batch_size
        self._fvd = self._fid = None
        if "fvd" in self.metrics:
            from stiv_jax.eval import fvd, i3d

            self._fvd = fvd.FeatureExtractor(i3d.load_i3d(i3d_weights), batch_size=batch_size, mesh=mesh)
        if "fid" in self.metrics:
            if not inception_weights:
                raise ConfigError(
                    "--metrics=fid needs --inception_weights: the pytorch-fid InceptionV3 "
                    "weights (pt_inception-2015-12-05-6726825d.pth)"
                )
            from stiv_jax.eval import fid, inception

            self._fid = fid.InceptionFeatures(inception.load_inception(inception_weights), batch_size=batch_size)

    def features(self, videos: Iterable[np.ndarray], progress: Progress | None = None) -> dict[str, np.ndarray]:
        """``{metric: features [N, D]}`` of the videos (uint8 ``[T, H, W, 3]`` each, any sizes)."""
        from stiv_jax.eval.fid import frames_of

        out: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for batch in same_shape_batches(videos, self.batch_size, progress):
            if self._fvd is not None:
                out["fvd"].append(self._fvd(batch))
            if self._fid is not None:
                out["fid"].append(self._fid(frames_of(batch)))
        return {m: np.concatenate(f) for m, f in out.items() if f}

    def distances(self, real: dict[str, np.ndarray], fake: dict[str, np.ndarray]) -> dict[str, float]:
        from stiv_jax.eval.frechet import frechet_distance_of

        return {m: frechet_distance_of(real[m], fake[m]) for m in self.metrics}

    def protocol(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._fvd is not None:
            from stiv_jax.eval.fvd import PROTOCOL

            out["fvd"] = PROTOCOL
        if self._fid is not None:
            from stiv_jax.eval.fid import PROTOCOL as FID_PROTOCOL

            out["fid"] = FID_PROTOCOL
        return out


def result_line(metrics: dict[str, float]) -> str:
    """The last stdout line of ``stiv-eval``: ``fvd=<float>`` first, then the others."""
    order = sorted(metrics, key=lambda m: (m != "fvd", METRICS.index(m) if m in METRICS else len(METRICS)))
    return " ".join(f"{m}={metrics[m]:.4f}" for m in order)
