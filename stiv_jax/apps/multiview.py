"""Measuring the demo's multi-view model (App. J.3, experiments/demo_multiview.py).

Held-out objects (``data/orbits.py``, a dataset seed training did not use) are rendered, written
and read back exactly as a training orbit; the front view is given and the model draws the other
views. Each generated view is compared with the true render at its azimuth: PSNR and SSIM
(``eval/ssim.py``), overall and per azimuth. The baseline copies the front view to every azimuth
(what a model that ignores the rotation would draw).
"""

from __future__ import annotations

import chex
import ml_collections
import numpy as np

from stiv_jax.apps.quality import read_like_training
from stiv_jax.apps.report import psnr
from stiv_jax.data import orbits
from stiv_jax.eval.ssim import ssim
from stiv_jax.sampling.options import SampleOptions

HELDOUT_SEED = 101  # object seed of the held-out orbits (make_orbit_data's default seed, 0, trains)
VIEWS = slice(1, None)  # the generated views


def real_orbits(config: ml_collections.ConfigDict, count: int, seed: int = HELDOUT_SEED) -> np.ndarray:
    """``uint8 [count, T, R, R, 3]``: orbits of ``count`` objects of dataset ``seed``, T =
    ``data.num_frames`` views, written and read back like a training orbit (``quality.read_like_training``)."""
    d = config.data
    videos = (orbits.render_orbit(solids, d.num_frames, orbits.SIZE) for solids in orbits.orbit_objects(count, seed))
    return read_like_training(videos, range(d.num_frames), d.resolution, orbits.FPS)


def copy_front(clips: np.ndarray) -> np.ndarray:
    """The baseline: every view replaced by the front view (frame 0)."""
    chex.assert_rank(clips, 5)
    return np.repeat(clips[:, :1], clips.shape[1], axis=1)


def view_scores(truth: np.ndarray, guess: np.ndarray) -> dict:
    """PSNR (dB, mean over objects) and SSIM (mean over views) of ``guess``'s generated views,
    overall and per view (``uint8 [N, T, H, W, 3]``)."""
    chex.assert_equal_shape([truth, guess])
    per_view_psnr = [
        float(np.mean([psnr(t, g) for t, g in zip(truth[:, v], guess[:, v])])) for v in range(1, truth.shape[1])
    ]
    s = ssim(truth[:, VIEWS], guess[:, VIEWS])  # [N, T − 1]
    return dict(
        psnr_db=float(np.mean([psnr(t[VIEWS], g[VIEWS]) for t, g in zip(truth, guess)])),
        ssim=float(s.mean()),
        psnr_db_per_view=per_view_psnr,
        ssim_per_view=[float(x) for x in s.mean(axis=0)],
    )


def multiview_report(
    sampler, *, count: int = 40, seed: int = 0, scales: tuple[float, ...] = (), batch: int = 20
) -> dict:
    """The model's views of ``count`` held-out objects against the truth and the copy baseline, at
    the run's guidance scale and at each of ``scales``; also returns the clips (``truth_videos``,
    ``multiview_videos``: at the run's scale)."""
    truth = real_orbits(sampler.config, count)
    options = SampleOptions.for_run(sampler.config, task="multiview", seed=seed, batch_size=batch)
    prompts = [""] * count
    runs = {options.scale: sampler.generate(prompts, options, image=truth[:, 0])}
    for scale in scales:
        if scale not in runs:
            runs[scale] = sampler.generate(prompts, options, image=truth[:, 0], scale=scale)
    given_kept = all(np.array_equal(v[:, 0], truth[:, 0]) for v in runs.values())
    return dict(
        objects=count,
        views=int(truth.shape[1]),
        azimuths_deg=[360.0 * k / truth.shape[1] for k in range(truth.shape[1])],
        scale=options.scale,
        given_kept=given_kept,
        model={f"s{s:g}": view_scores(truth, v) for s, v in runs.items()},
        copy_front=view_scores(truth, copy_front(truth)),
        truth_videos=truth,
        multiview_videos=runs[options.scale],
    )
