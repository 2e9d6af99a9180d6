"""Measuring the demo's temporal upsampler (STIV-TUP, App. J.2, experiments/demo_tup.py).

Two measurements over the demo captions:

* **Inserted frames vs the truth.** Held-out real clips (render seed ``quality.REFERENCE_SEED``)
  read at the upsampler's length and stride; their even frames are given, the odd ones sampled
  and compared with the true frames: PSNR, and the error of the shape's centroid in pixels. Two
  baselines need no model: repeating the previous given frame, and the average of the two given
  neighbours (a cross-fade, which puts the centroid in the right place but draws two half-bright
  shapes). Scores are given for the captions that move, those that stand still and all of them;
  the moving ones are the measure: a still clip's in-between is its neighbour, which both
  baselines reproduce exactly (~60 dB, the codec's noise), and a few such clips dominate a mean
  of dB over clips.
* **The cascade**, T2V → TUP: the given frames come back unchanged, and on the captions that
  move, each inserted frame's centroid lies strictly between those of its two given neighbours
  (projected on the segment joining them, within 1 px of it).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import numpy as np

from stiv_jax.apps import quality
from stiv_jax.apps.report import centroids, frame_scores, parse_caption
from stiv_jax.sampling import cascade

ODD = slice(1, None, 2)  # the inserted frames of a 2T − 1-frame clip
OFF_PATH_PX = 1.0  # an inserted centroid farther than this from the neighbours' segment is not "between"


def between(before: np.ndarray, inserted: np.ndarray, after: np.ndarray) -> bool:
    """Whether the centroid ``inserted`` lies strictly between ``before`` and ``after``: its
    projection on the segment falls inside it and it is within ``OFF_PATH_PX`` of the segment."""
    seg = after - before
    length2 = float(seg @ seg)
    if not np.all(np.isfinite([*before, *inserted, *after])) or length2 == 0.0:
        return False
    lam = float((inserted - before) @ seg) / length2
    off = np.linalg.norm(inserted - before - lam * seg)
    return 0.0 < lam < 1.0 and off <= OFF_PATH_PX


def baselines(clips: np.ndarray) -> dict[str, np.ndarray]:
    """``clips`` ``[N, 2T − 1, H, W, 3]`` with their odd frames made from the even ones without a
    model: ``repeat`` the previous frame, ``blend`` (average) the two neighbours."""
    chex.assert_rank(clips, 5)
    repeat, blend = clips.copy(), clips.copy()
    repeat[:, 1::2] = clips[:, 0:-1:2]
    mean = (clips[:, 0:-1:2].astype(np.float32) + clips[:, 2::2].astype(np.float32)) / 2
    blend[:, 1::2] = np.round(mean).astype(np.uint8)
    return dict(repeat=repeat, blend=blend)


def is_moving(prompts: Sequence[str]) -> np.ndarray:
    """``bool [N]``: which captions ask for motion (not ``still``)."""
    return np.array([parse_caption(p)["motion"] != "still" for p in prompts], bool)


def grouped_scores(truth: np.ndarray, guess: np.ndarray, prompts: Sequence[str]) -> dict:
    """:func:`~stiv_jax.apps.report.frame_scores` of the inserted frames over the ``moving``
    captions, the ``still`` ones and ``all`` (a group without clips is left out)."""
    moving = is_moving(prompts)
    groups = dict(moving=moving, still=~moving, all=np.ones_like(moving))
    return {name: frame_scores(truth[rows], guess[rows], ODD) for name, rows in groups.items() if rows.any()}


def inbetween_report(upsampler, prompts: Sequence[str], *, seed: int = 0, batch: int = 20) -> dict:
    """The upsampler's inserted frames vs the true frames of held-out real clips, with the
    baselines (module docstring)."""
    truth = quality.real_clips(prompts, upsampler.config, quality.REFERENCE_SEED)
    outs = [
        cascade.upsample(upsampler, prompts[i : i + batch], truth[i : i + batch, ::2], seed=seed)
        for i in range(0, len(prompts), batch)
    ]
    out = np.concatenate(outs)
    return dict(
        clips=len(prompts),
        frames=int(truth.shape[1]),
        stride=int(upsampler.config.data.frame_strides[0]),
        given_kept=bool(np.array_equal(out[:, ::2], truth[:, ::2])),
        model=grouped_scores(truth, out, prompts),
        baselines={name: grouped_scores(truth, clips, prompts) for name, clips in baselines(truth).items()},
    )


def cascade_report(low: np.ndarray, high: np.ndarray, prompts: Sequence[str]) -> dict:
    """T2V clips ``low`` ``[N, T, ...]`` and their upsampled ``high`` ``[N, 2T − 1, ...]``: given
    frames kept, and the fraction of inserted frames between their neighbours (moving captions)."""
    chex.assert_rank([low, high], 5)
    moving = np.flatnonzero(is_moving(prompts))
    hits = []
    for i in moving:
        c = centroids(high[i])
        hits += [between(c[t - 1], c[t], c[t + 1]) for t in range(1, high.shape[1] - 1, 2)]
    return dict(
        clips=len(prompts),
        moving_clips=len(moving),
        given_kept=bool(np.array_equal(high[:, ::2], low)),
        inserted_frames=len(hits),
        between_fraction=float(np.mean(hits)) if hits else float("nan"),
    )
