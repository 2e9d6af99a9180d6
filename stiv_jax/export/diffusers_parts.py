"""The STIV pipeline's own diffusers components (torch, diffusers and numpy only; no JAX).

- :class:`STIVTransformer3DModel`: the STIV DiT (``torch_stiv.STIV``) as a diffusers model;
- :class:`STIVFlowMatchScheduler`: the flow-matching ODE on STIV's time grids (paper §2.1) — the
  same ``sampling.schedules`` grids, cast to float32 and stepped as the JAX sampler does;
- :class:`STIVTokenEmbedding`: the frozen random token table of toy runs (``text/embedding.py``);
- :class:`STIVPixelAutoencoder`: the space-to-depth "autoencoder" of toy runs (``vae/pixel.py``);
- :func:`low_pass`: the frequency split of frequency-decoupled guidance (``sampling/guidance.py``).

Pretrained CLIP / T5 text encoders and the KL autoencoder are the stock ``transformers`` /
``diffusers`` classes. Tensors are channels-last ``[B, T, H, W, C]`` inside the pipeline, as in
the JAX sampler; ``STIVPipeline`` converts the diffusers layout ``[B, C, T, H, W]`` at its edges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin  # diffusers finds the loaders by these names
from diffusers.configuration_utils import register_to_config
from torch import nn

from stiv_jax.export.torch_stiv import STIV
from stiv_jax.sampling import schedules
from stiv_jax.sampling.kinds import SOLVERS, gaussian_taps


class STIVTransformer3DModel(ModelMixin, ConfigMixin):
    """The STIV DiT; ``stiv_config`` is the Flax model config (the ``.json`` of ``stiv-export-torch``).

    ``forward(x [B, T, H, W, C], t [B], text=, text_mask=, pooled_text=, micro=, cond_mask=)``
    returns the velocity ``[B, T, H, W, C]`` (``torch_stiv.STIV.forward``); weights are
    ``stiv.``-prefixed ``torch_stiv`` state-dict keys.
    """

    @register_to_config
    def __init__(self, stiv_config: dict[str, Any]):
        super().__init__()
        self.stiv = STIV(stiv_config)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        return self.stiv(x, t, **cond)


class STIVFlowMatchScheduler(SchedulerMixin, ConfigMixin):
    """Integrates ``dx/dt = v`` from t = 0 (noise) to t = 1 (data) on a fixed grid (sampling/ode.py).

    :meth:`set_timesteps` builds the grid (``linear`` or Movie Gen's ``linear_quadratic``
    emulating ``emulated_steps`` linear steps) in float64 and keeps it as float32, the JAX
    sampler's times; :meth:`step` is ``x + (t[i+1] − t[i])·v`` in float32.
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        schedule: str = "linear_quadratic",
        num_inference_steps: int = 50,
        emulated_steps: int = 250,
        solver: str = "euler",
    ):
        if schedule not in schedules.SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {schedules.SCHEDULES}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        self.set_timesteps(num_inference_steps)

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None, schedule: str | None = None
    ) -> None:
        """``self.times`` ``[S + 1]`` (float32, rising 0 → 1) and ``self.timesteps`` = ``times[:-1]``."""
        grid = schedules.get(schedule or self.config.schedule, num_inference_steps, self.config.emulated_steps)
        self.num_inference_steps = int(num_inference_steps)
        self.times = torch.from_numpy(grid.astype(np.float32)).to(device or "cpu")
        self.timesteps = self.times[:-1]

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        """The Euler update of step ``index``: ``sample + (t[index+1] − t[index])·velocity``."""
        h = (self.times[index + 1] - self.times[index]).to(sample.dtype)
        return sample + h * velocity

    def __len__(self) -> int:
        return self.num_inference_steps


class STIVTokenEmbedding(ModelMixin, ConfigMixin):
    """Frozen token table: ``(ids, mask [B, L]) -> (tokens [B, L, D], pooled [B, D])``; pooled is
    the mean of the valid token vectors (``text/embedding.py``)."""

    @register_to_config
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab_size, dim), requires_grad=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.float()[..., None]
        tokens = self.table[ids.long()].float() * m
        return tokens, tokens.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class STIVPixelAutoencoder(ModelMixin, ConfigMixin):
    """Space-to-depth by ``downsample`` (``vae/pixel.py``), then ``(x − shift_factor)·scaling_factor``:
    frames ``[..., H, W, 3]`` in [-1, 1] ↔ latents ``[..., H/f, W/f, 3·f²]``, exact inverses. It has
    no weights; the factor is kept as a buffer so diffusers' loaders find a weights file."""

    @register_to_config
    def __init__(
        self, downsample: int = 1, image_channels: int = 3, scaling_factor: float = 1.0, shift_factor: float = 0.0
    ):
        super().__init__()
        self.register_buffer("factor", torch.tensor(int(downsample)))

    @property
    def latent_channels(self) -> int:
        return self.config.image_channels * self.config.downsample**2

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        z = space_to_depth(frames, self.config.downsample)
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return depth_to_space(latents / self.config.scaling_factor + self.config.shift_factor, self.config.downsample)


def space_to_depth(frames: torch.Tensor, f: int) -> torch.Tensor:
    """``[..., H, W, c]`` → ``[..., H/f, W/f, f·f·c]`` (``vae/pixel.py: space_to_depth``)."""
    *lead, h, w, c = frames.shape
    if h % f or w % f:
        raise ValueError(f"frame size {h}x{w} is not divisible by downsample={f}")
    x = frames.reshape(*lead, h // f, f, w // f, f, c).movedim(-4, -3)
    return x.reshape(*lead, h // f, w // f, f * f * c)


def depth_to_space(latents: torch.Tensor, f: int) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`: ``[..., h, w, f·f·c]`` → ``[..., h·f, w·f, c]``."""
    *lead, h, w, cf = latents.shape
    x = latents.reshape(*lead, h, w, f, f, cf // (f * f)).movedim(-3, -4)
    return x.reshape(*lead, h * f, w * f, cf // (f * f))


def low_pass(x: torch.Tensor, sigma: float, subpixels: int = 1) -> torch.Tensor:
    """Gaussian low-pass of each frame of latents ``[B, T, h, w, C]`` (``sampling/guidance.py: low_pass``)."""
    p = depth_to_space(x, subpixels) if subpixels > 1 else x
    taps = gaussian_taps(sigma)
    radius = len(taps) // 2
    for dim in (2, 3):
        offsets = torch.arange(p.shape[dim], device=p.device) - radius
        p = sum(w * p.index_select(dim, (offsets + k).clamp(0, p.shape[dim] - 1)) for k, w in enumerate(taps))
    return space_to_depth(p, subpixels) if subpixels > 1 else p
