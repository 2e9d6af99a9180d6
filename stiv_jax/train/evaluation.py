"""Evaluation during training (``config.eval_every_steps``): FVD of EMA samples against real clips.

Every ``eval_every_steps`` steps the EMA weights sample a fixed prompt set (``config.eval.prompts``,
default the captions of the first real clips) with the run's sampling settings and a fixed seed;
the videos go to TensorBoard (``eval/samples``: a row of frames per video) and FVD against
``config.eval.real_path`` (a clip-shard or video folder; its I3D features are computed once) to
TensorBoard and ``metrics.jsonl`` (``eval/fvd``). Off (``eval_every_steps=0``) nothing is built.
The sampler is compiled once and reused with each step's weights. On several hosts every process
runs the same sampling program over the training mesh (the EMA weights stay sharded as they are)
and the I3D features are computed with the clips sharded over the mesh; every process then holds
the same videos and the same FVD, and process 0 writes them.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from stiv_jax.data.latent_cache import null_text_for
from stiv_jax.encoders.conditioner import Conditioner
from stiv_jax.errors import ConfigError
from stiv_jax.eval.evaluate import Evaluator
from stiv_jax.eval.videos import iter_videos
from stiv_jax.parallel.mesh import replicated
from stiv_jax.sampling.options import SampleOptions
from stiv_jax.sampling.pipeline import Sampler
from stiv_jax.storage.workdir import RunLog
from stiv_jax.text.tokenizer import make_tokenizer

TB_VIDEOS = 4  # videos shown in TensorBoard per evaluation


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses, naming the key, an evaluation that cannot run (before anything compiles)."""
    if not config.eval_every_steps:
        return
    if config.eval_every_steps < 0:
        raise ConfigError(f"config.eval_every_steps={config.eval_every_steps} must be >= 0 (0: off)")
    if not config.eval.real_path:
        raise ConfigError("config.eval_every_steps needs config.eval.real_path: real clips (a shard or video folder)")
    if config.eval.num_samples < 2 or config.eval.num_real < 2:
        raise ConfigError("config.eval.num_samples and config.eval.num_real must be >= 2 (FVD needs two sets)")


class TrainingEval:
    """Built once before the first step; ``__call__(step, state, log)`` evaluates ``state``'s EMA."""

    def __init__(self, config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh):
        c = config.eval
        self.graphdef, self.config = graphdef, config
        self.evaluator = Evaluator(("fvd",), batch_size=c.batch_size, mesh=mesh, i3d_weights=c.i3d_weights or None)
        real = list(iter_videos(c.real_path, c.num_real))
        self.real = self.evaluator.features(v.frames for v in real)
        self.prompts = list(c.prompts) or [v.caption for v in real[: c.num_samples]]
        self.prompts = [self.prompts[i % len(self.prompts)] for i in range(c.num_samples)]
        conditioner = Conditioner(config, with_autoencoder=True)
        frozen = jax.device_put(conditioner.frozen_params(null_text_for(config)), replicated(mesh))
        d = config.data
        tokenizer = make_tokenizer(d.get("tokenizer", "t5"), d.tokenizer_path, d.max_text_length)
        self.options = SampleOptions.for_run(config, seed=c.seed, batch_size=c.batch_size)
        self.sampler = None
        self._sampler_args = (conditioner, frozen, tokenizer)

    def __call__(self, step: int, state: dict, log: RunLog | None) -> dict[str, float]:
        start = time.perf_counter()
        model = nnx.merge(self.graphdef, state["ema_params"])
        if self.sampler is None:
            self.sampler = Sampler(self.config, model, *self._sampler_args, step=step, ema=True)
        self.sampler.model, self.sampler.step = model, step
        videos = self.sampler.generate(self.prompts, self.options)
        fvd = self.evaluator.distances(self.real, self.evaluator.features(list(videos)))["fvd"]
        metrics = {"fvd": fvd, "seconds": time.perf_counter() - start}
        if log is not None:
            log.write(step, metrics, section="eval")
            log.videos("eval/samples", np.asarray(videos[:TB_VIDEOS]), step)
            print(f"eval at step {step}: fvd {fvd:.2f} ({len(videos)} samples, {metrics['seconds']:.1f}s)", flush=True)
        return metrics
