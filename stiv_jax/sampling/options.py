"""What shapes a sample (``SampleOptions``) and which conditioning pixels each task takes.

Defaults: the built-in ones below (guidance: :class:`~stiv_jax.sampling.guidance.Guidance`'s, the
paper's), replaced by a run's ``config.sampling`` section, replaced by what the caller passes
(:meth:`SampleOptions.for_run`; ``stiv-sample``'s flags).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from stiv_jax.errors import ConfigError
from stiv_jax.flow.task_table import TASKS
from stiv_jax.sampling import ode, schedules
from stiv_jax.sampling.guidance import Guidance
from stiv_jax.vae.pixel import PixelAutoencoder

ALL_TASKS = (*TASKS, "long")
# Conditioning pixels each task needs (required) and accepts (optional), by argument name.
_REQUIRED = {
    "ti2v": ("image",),
    "multiview": ("image",),
    "interpolate": ("image", "last_image"),
    "predict": ("video",),
    "upsample": ("video",),
}
_OPTIONAL = {"long": ("image",)}
FLAGS = {"image": "--image", "last_image": "--last_image", "video": "--video"}

Pixels = str | np.ndarray | None  # a file path, uint8 pixels, or float32 pixels in [-1, 1]
_GUIDANCE = Guidance()  # the guidance defaults (the paper's), written once there


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Everything that shapes a sample; ``None`` fields default from the training config, the
    others are the built-in defaults a run's ``config.sampling`` replaces (:meth:`for_run`).
    Guidance scales: any finite ``|s| <= guidance.MAX_SCALE`` (1: no guidance, 0: unconditional,
    < 0: away from the prompt or image)."""

    task: str = "t2v"
    num_frames: int | None = None  # clip length T (data.num_frames; 1 for t2i)
    height: int | None = None  # data.resolution
    width: int | None = None
    steps: int = 50
    schedule: str = "linear_quadratic"
    emulated_steps: int = 250
    guidance: str = _GUIDANCE.kind
    scale: float = _GUIDANCE.scale  # s (cfg/jit), s_txt (sit)
    image_scale: float = _GUIDANCE.image_scale  # s_img (sit)
    renorm: str = _GUIDANCE.renorm
    high_scale: float | None = _GUIDANCE.high_scale  # FDG's scale of the high frequencies (None: off)
    split_sigma: float = _GUIDANCE.split_sigma  # FDG's low-pass std, pixels
    solver: str = "euler"
    seed: int = 0
    frame_stride: int | None = None  # micro-condition; data.frame_strides[0]
    predict_frames: int | None = None  # predict: given frames k; min(config.predict_frames, T − 1)
    long_keyframes: int | None = None  # long: keyframes K; T
    video_stride: int = 1  # predict/upsample: take every n-th frame of the given video
    batch_size: int | None = None  # prompts per program run (None: all at once)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the bad option (cheap: call before loading a model)."""
        for name, allowed in dict(task=ALL_TASKS, schedule=schedules.SCHEDULES, solver=ode.SOLVERS).items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {allowed}")
        for name in ("num_frames", "height", "width", "frame_stride", "predict_frames", "long_keyframes", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.guidance_settings().check_scales()  # kind, renorm, finite scales
        if not 0 <= self.seed < 2**32:  # jax.random.key keeps 32 bits: larger seeds alias
            raise ConfigError(f"seed (--seed) must be in [0, 2**32), got {self.seed}")
        if self.steps < 1 or self.video_stride < 1:
            raise ValueError(f"steps and video_stride must be >= 1, got {self.steps}, {self.video_stride}")
        schedules.get(self.schedule, self.steps, self.emulated_steps)  # raises on bad step counts

    def guidance_settings(self) -> Guidance:
        return Guidance(
            self.guidance,
            self.scale,
            self.image_scale,
            self.renorm,
            high_scale=self.high_scale,
            split_sigma=self.split_sigma,
        )

    def run_guidance(self, config: ml_collections.ConfigDict, autoencoder: Any) -> Guidance:
        """:meth:`guidance_settings` with what is the run's, not a sampling choice: the null image
        its image dropout showed, and whether its latents are pixel blocks (FDG's low-pass)."""
        subpixels = autoencoder.downsample if isinstance(autoencoder, PixelAutoencoder) else 1
        null_image = config.get("null_image", "noise")
        return dataclasses.replace(self.guidance_settings(), null_image=null_image, subpixels=subpixels)

    @classmethod
    def for_run(cls, config: ml_collections.ConfigDict | None, **overrides: Any) -> SampleOptions:
        """The built-in defaults, then the set keys of the run's ``config.sampling``, then ``overrides``."""
        section = (config.get("sampling") if config is not None else None) or {}
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in section.items() if v is not None and k in fields}, **overrides})


def check_inputs(task: str, **given: Pixels) -> None:
    """Fails fast when ``task`` misses a conditioning input or gets one it cannot use."""
    required, allowed = _REQUIRED.get(task, ()), _REQUIRED.get(task, ()) + _OPTIONAL.get(task, ())
    for name, value in given.items():
        if value is None and name in required:
            raise ValueError(f"task {task!r} needs {name} ({FLAGS[name]})")
        if value is not None and name not in allowed:
            raise ValueError(
                f"task {task!r} does not use {name} ({FLAGS[name]}); it takes "
                f"{', '.join(FLAGS[a] for a in allowed) or 'no conditioning pixels'}"
            )
        if isinstance(value, str) and not os.path.isfile(value):
            raise FileNotFoundError(f"{FLAGS[name]} {value!r}: no such file")
