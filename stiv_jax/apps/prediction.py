"""Measuring the demo's video prediction (STIV-V2V, App. J.1, experiments/demo_v2v.py).

Over the demo captions, held-out real clips (render seed ``quality.FLOOR_SEED``) read like training
clips; their first ``k`` frames are given (``config.predict_frames``) and the rest predicted:

* **FVD** of the predicted clips against real clips of ``quality.REFERENCE_SEED`` (the demo's FVD
  protocol), next to T2V samples of the same prompts from the model V2V was fine-tuned from, and
  to the floor (the given clips themselves, real).
* **Predicted frames vs the truth**: PSNR and centroid error, next to copying the last given frame
  and to the base model asked for the same prediction without fine-tuning (frame replacement at
  sampling time only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stiv_jax.apps import quality
from stiv_jax.apps.report import frame_scores
from stiv_jax.eval.evaluate import Evaluator
from stiv_jax.sampling.options import SampleOptions


def copy_last(clips: np.ndarray, k: int) -> np.ndarray:
    """``clips`` with every frame after the first ``k`` replaced by frame ``k − 1`` (no motion)."""
    out = clips.copy()
    out[:, k:] = clips[:, k - 1 : k]
    return out


def prediction_report(predictor, base, prompts: Sequence[str], *, seed: int = 0, batch: int = 20) -> dict:
    """V2V (``predictor``) against T2V and zero-shot prediction by ``base`` and against copying the
    last frame (module docstring); both are :class:`~stiv_jax.sampling.pipeline.Sampler`. Also
    returns the real clips and V2V's predictions of them (``truth_videos``, ``v2v_videos``)."""
    prompts = list(prompts)
    k = int(predictor.config.predict_frames)
    truth = quality.real_clips(prompts, predictor.config, quality.FLOOR_SEED)
    given = truth[:, :k]
    options = SampleOptions.for_run(predictor.config, task="predict", predict_frames=k, seed=seed, batch_size=batch)
    predicted = predictor.generate(prompts, options, video=given)
    # The base model predicts with the V2V run's sampler settings: only the weights differ.
    zero_shot = base.generate(prompts, options, video=given)
    t2v_options = SampleOptions.for_run(base.config, task="t2v", seed=seed, batch_size=batch)
    t2v = {
        f"t2v_s{scale:g}": base.generate(prompts, dataclasses.replace(t2v_options, scale=scale))
        for scale in sorted({t2v_options.scale, 1.0}, reverse=True)
    }
    evaluator = Evaluator(("fvd",))
    reference = evaluator.features(quality.real_clips(prompts, predictor.config, quality.REFERENCE_SEED))
    clips = dict(v2v=predicted, zero_shot=zero_shot, copy_last=copy_last(truth, k), **t2v, real=truth)
    fvd = {name: evaluator.distances(reference, evaluator.features(list(v)))["fvd"] for name, v in clips.items()}
    after = slice(k, None)
    return dict(
        clips=len(prompts),
        frames=int(truth.shape[1]),
        given_frames=k,
        given_kept=bool(np.array_equal(predicted[:, :k], given)),
        fvd=fvd,
        predicted_frames={name: frame_scores(truth, clips[name], after) for name in ("v2v", "zero_shot", "copy_last")},
        truth_videos=truth,
        v2v_videos=predicted,
    )
