"""The demo's PyTorch check: export the trained run as a diffusers pipeline folder and draw the
same T2V and TI2V videos with ``STIVPipeline`` from the JAX sampler's initial noise.

Reported as PSNR (dB) of the PyTorch video against the JAX one (uint8 frames); 40 dB is the bar
of tests/test_export_diffusers.py. The folder stays beside the demo outputs for PyTorch users.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from stiv_jax.apps.report import psnr
from stiv_jax.sampling.options import SampleOptions
from stiv_jax.sampling.pipeline import Sampler


def pytorch_parity(
    sampler: Sampler, workdir: str, folder: str, options: SampleOptions, prompt: str, image: np.ndarray, seed: int
) -> dict:
    """Exports ``workdir`` to ``folder``; ``{"folder", "t2v_psnr_db", "ti2v_psnr_db", "seconds"}``."""
    import torch

    from stiv_jax.export import STIVPipeline
    from stiv_jax.export.diffusers_export import export_diffusers

    start = time.perf_counter()
    export_diffusers(workdir, folder)
    pipe = STIVPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    report: dict = {"folder": folder}
    for task, given in (("t2v", {}), ("ti2v", {"image": image})):
        opts = dataclasses.replace(options, task=task)
        noise = np.random.default_rng(seed).standard_normal(sampler.latent_shape(sampler.plan(opts), 1))
        noise = noise.astype(np.float32)
        jax_video = sampler.generate([prompt], opts, noise=noise, **given)
        frames = pipe(
            prompt,
            task=task,
            num_inference_steps=opts.steps,
            schedule=opts.schedule,
            guidance=opts.guidance,
            guidance_scale=opts.scale,
            image_guidance_scale=opts.image_scale,
            renorm=opts.renorm,
            high_guidance_scale=opts.high_scale,
            split_sigma=opts.split_sigma,
            solver=opts.solver,
            latents=torch.from_numpy(noise).permute(0, 4, 1, 2, 3),
            **given,
        ).frames
        torch_video = np.round(frames * 255.0).astype(np.uint8)
        report[f"{task}_psnr_db"] = psnr(torch_video, jax_video)
    report["seconds"] = time.perf_counter() - start
    return report
