"""``STIVPipeline``: STIV text(-image)-to-video sampling in PyTorch (torch, diffusers, transformers;
no JAX), loaded from a folder written by ``stiv-export-torch --format=diffusers``::

    from diffusers.utils import export_to_video
    from stiv_jax.export import STIVPipeline

    pipe = STIVPipeline.from_pretrained("stiv-diffusers")
    video = pipe("a red circle moving left", num_inference_steps=50, guidance="jit").frames[0]
    export_to_video(video, "circle.mp4", fps=8)

It is the JAX sampler (stiv_jax/sampling) step for step: the run's tokenizer and frozen text
encoder, the empty prompt for guidance, frame replacement at every step (§2.3.1; image-free
guidance branches see the run's null image, ``sampling/frames.py``), JIT-CFG /
SIT-CFG / text CFG with CFG-renorm and frequency-decoupled guidance (``sampling/guidance.py``, all
branches in one batched model call), the same float32 time grid and Euler/Heun updates
(``sampling/ode.py``). Given the same initial noise (``latents=``, diffusers layout
``[B, C, T, h, w]``; ``Sampler.generate(noise=)`` takes ``[B, T, h, w, C]``) it draws the JAX
sampler's video (tests/test_export_diffusers.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from stiv_jax.export.diffusers_parts import STIVPixelAutoencoder, STIVTokenEmbedding, low_pass
from stiv_jax.export.diffusers_tokenizer import STIVTokenizer
from stiv_jax.flow.task_table import DEFAULT_PREDICT_FRAMES, NULL_IMAGES, TASKS, given_frame_indices
from stiv_jax.model.micro import micro_conditions
from stiv_jax.sampling.kinds import GUIDANCE_BRANCHES, GUIDANCE_KINDS, RENORM_MODES, SOLVERS
from stiv_jax.sampling.schedules import SCHEDULES

_TEXT_KEYS = ("text", "text_mask", "pooled_text")


@dataclasses.dataclass
class STIVPipelineOutput(BaseOutput):
    """``frames``: ``np`` float ``[B, T, H, W, 3]`` in [0, 1]; ``pt`` float ``[B, T, 3, H, W]``;
    ``pil`` a list (per video) of lists of ``PIL.Image``."""

    frames: Any


@dataclasses.dataclass(frozen=True)
class _Given:
    """Given latent frames (``sampling/frames.py: FrameCondition``), channels-last."""

    latents: torch.Tensor  # [B, T, h, w, C], clean latents at given frames
    mask: torch.Tensor  # [B, T] bool
    noise: torch.Tensor  # [B, T, h, w, C], the initial state
    null_image: str = "noise"  # what branches without the image see (NULL_IMAGES)

    def _m(self) -> torch.Tensor:
        return self.mask[:, :, None, None, None]

    def replace(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self._m(), self.latents, x)

    def unconditioned(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input and ``cond_mask`` of a branch without the image."""
        if self.null_image == "zeros":
            return torch.where(self._m(), torch.zeros_like(x), x), self.mask
        return torch.where(self._m(), t * self.latents + (1.0 - t) * self.noise, x), torch.zeros_like(self.mask)

    def zero_given(self, v: torch.Tensor) -> torch.Tensor:
        return torch.where(self._m(), torch.zeros_like(v), v)


class STIVPipeline(DiffusionPipeline):
    """Components: ``transformer`` (STIVTransformer3DModel), ``scheduler`` (STIVFlowMatchScheduler),
    ``text_encoder`` (STIVTokenEmbedding, transformers CLIPTextModel[WithProjection] or
    T5EncoderModel), ``tokenizer`` (STIVTokenizer), ``vae`` (STIVPixelAutoencoder or diffusers
    AutoencoderKL). ``stiv`` (in model_index.json) holds the run's sampling defaults (clip
    geometry, frame stride, guidance) and how pooled text is taken (``text_pooling``)."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(self, transformer, scheduler, text_encoder, tokenizer: STIVTokenizer, vae, stiv: dict | None = None):
        super().__init__()
        self.register_modules(
            transformer=transformer, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae
        )
        self.register_to_config(stiv=dict(stiv or {}))

    # ------------------------------------------------------------------------------ encoders
    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.config.stiv)

    @property
    def downsample(self) -> int:
        if isinstance(self.vae, STIVPixelAutoencoder):
            return self.vae.config.downsample
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        if isinstance(self.vae, STIVPixelAutoencoder):
            return self.vae.latent_channels
        return self.vae.config.latent_channels

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``text [B, L, D]``, ``text_mask [B, L]`` bool, ``pooled_text [B, D]`` (text/encoder.py)."""
        enc = self.tokenizer(list(prompts), return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device).bool()
        if isinstance(self.text_encoder, STIVTokenEmbedding):
            tokens, pooled = self.text_encoder(ids, mask)
        else:
            hidden = self.text_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
            pooling = self.defaults.get("text_pooling", "mean")
            if pooling == "mean":  # T5: no pooled token
                w = mask.float()[..., None]
                pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)
            else:  # CLIP: the state at the pooling position (text/clip.py: pool_index)
                if pooling == "last":
                    index = (mask.long().sum(-1) - 1).clamp(min=0)
                elif pooling == "eos":
                    index = (ids == int(self.defaults["text_eos_id"])).int().argmax(-1)
                else:  # argmax
                    index = ids.argmax(-1)
                pooled = hidden[torch.arange(ids.shape[0], device=ids.device), index]
                if self.defaults.get("text_projection"):
                    pooled = self.text_encoder.text_projection(pooled)
            tokens = hidden
        tokens = tokens.float() * mask[..., None]
        return dict(text=tokens, text_mask=mask, pooled_text=pooled.float())

    def _vae_scale(self) -> tuple[float, float]:
        return float(self.vae.config.scaling_factor), float(self.vae.config.shift_factor or 0.0)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, G, H, W, 3]`` in [-1, 1] → latents ``[B, G, h, w, C]`` (posterior means)."""
        if isinstance(self.vae, STIVPixelAutoencoder):
            return self.vae.encode(frames)
        b, g = frames.shape[:2]
        x = frames.reshape(b * g, *frames.shape[2:]).permute(0, 3, 1, 2).to(self.vae.dtype)
        z = torch.cat([self.vae.encode(c).latent_dist.mean for c in x.split(16)]).float()
        scale, shift = self._vae_scale()
        return ((z - shift) * scale).permute(0, 2, 3, 1).reshape(b, g, *z.shape[2:], z.shape[1])

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, T, h, w, C]`` → pixels ``[B, T, H, W, 3]`` clipped to [-1, 1]."""
        if isinstance(self.vae, STIVPixelAutoencoder):
            return self.vae.decode(latents).clamp(-1.0, 1.0)
        b, t = latents.shape[:2]
        scale, shift = self._vae_scale()
        z = (latents.reshape(b * t, *latents.shape[2:]) / scale + shift).permute(0, 3, 1, 2).to(self.vae.dtype)
        x = torch.cat([self.vae.decode(c).sample for c in z.split(16)]).float()
        return x.permute(0, 2, 3, 1).reshape(b, t, *x.shape[2:3], x.shape[3], 3).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------------ sampling
    def _velocity(self, x, t, cond, null, given: _Given, kind, scale, image_scale, renorm, high_scale, split_sigma):
        """Guided velocity (sampling/guidance.py: guided_velocity), one batched model call."""
        branches, b = GUIDANCE_BRANCHES[kind], x.shape[0]
        xs, conds = [], []
        for with_text, with_image in branches:
            c = dict(cond)
            if not with_text:
                c.update({k: null[k].expand(b, *null[k].shape[1:]) for k in _TEXT_KEYS})
            xi, c["cond_mask"] = (x, given.mask) if with_image else given.unconditioned(x, t)
            xs.append(xi)
            conds.append(c)
        x_all = torch.cat(xs)
        cond_all = {k: torch.cat([c[k] for c in conds]) for k in conds[0]}
        v_all = self.transformer(x_all, t.expand(x_all.shape[0]), **cond_all).float()
        v = [given.zero_given(vb) for vb in v_all.split(b)]
        if kind == "none":
            return v[0]
        if kind in ("cfg", "jit"):
            guided = v[1] + scale * (v[0] - v[1])
        else:
            guided = v[2] + image_scale * (v[1] - v[2]) + scale * (v[0] - v[1])
        if high_scale is not None:
            high = v[-1] + high_scale * (v[0] - v[-1])
            subpixels = self.downsample if isinstance(self.vae, STIVPixelAutoencoder) else 1
            guided = high + low_pass(guided - high, split_sigma, subpixels)
        if renorm == "none":
            return guided
        dims = tuple(range(1, guided.ndim))
        norm_c = v[0].square().sum(dims, keepdim=True).sqrt()
        norm_g = guided.square().sum(dims, keepdim=True).sqrt()
        ratio = norm_c / norm_g.clamp(min=torch.finfo(guided.dtype).tiny)
        return guided * (ratio.clamp(max=1.0) if renorm == "clip" else ratio)

    def _pixels(self, value: Any, height: int, width: int, name: str, video: bool) -> torch.Tensor:
        """PIL image(s) / uint8 / float [-1, 1] arrays → float32 ``[B, G, H, W, 3]`` (uint8 and PIL
        input of another size is resized to cover H×W and centre-cropped, bicubic)."""
        from PIL import Image, ImageOps

        if isinstance(value, Image.Image):
            value = [value]
        if isinstance(value, list) and value and isinstance(value[0], Image.Image):
            value = np.stack(
                [np.asarray(ImageOps.fit(v.convert("RGB"), (width, height), Image.BICUBIC)) for v in value]
            )
            value = value if video else value[:, None]  # list of frames (video) or of images
            value = value[None] if video else value
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        ndim = 4 if video else 3
        if value.ndim == ndim:
            value = value[None]
        if not video and value.ndim == 4:
            value = value[:, None]
        if value.ndim != 5 or value.shape[-1] != 3:
            raise ValueError(f"{name} must be [{'T, ' if video else ''}H, W, 3] pixels (or batched), got {value.shape}")
        if value.dtype == np.uint8:
            if value.shape[2:4] != (height, width):
                fit = lambda f: np.asarray(ImageOps.fit(Image.fromarray(f), (width, height), Image.BICUBIC))
                value = np.stack([[fit(f) for f in clip] for clip in value])
            value = value.astype(np.float32) / 127.5 - 1.0
        elif value.shape[2:4] != (height, width):
            raise ValueError(f"{name}: float pixels must be exactly {height}x{width}, got {value.shape[2:4]}")
        return torch.from_numpy(np.ascontiguousarray(value, np.float32)).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        image: Any = None,
        last_image: Any = None,
        video: Any = None,
        task: str | None = None,
        num_inference_steps: int | None = None,
        schedule: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        renorm: str | None = None,
        high_guidance_scale: float | None = None,
        split_sigma: float | None = None,
        solver: str | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        frame_stride: int | None = None,
        num_given_frames: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> STIVPipelineOutput | tuple:
        """Samples one clip per prompt. ``task``: t2v (default; t2i with ``num_frames=1``), ti2v
        (``image``), interpolate (``image``, ``last_image``), predict (``video``: the first
        ``num_given_frames``), upsample (``video``: ceil(T/2) frames), multiview (``image``: the
        front view; empty prompt). ``guidance``: none | cfg |
        jit (STIV JIT-CFG) | sit (SIT-CFG, ``image_guidance_scale`` = s_img);
        ``high_guidance_scale``: frequency-decoupled guidance's scale of the high frequencies, split
        off by a Gaussian of std ``split_sigma`` pixels (the run's ``high_scale``, ``split_sigma``);
        unset arguments take the run's defaults (``self.defaults``). ``latents``: the initial noise
        ``[B, C, T, h, w]`` (default: ``torch.randn`` with ``generator``)."""
        d = self.defaults
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        task = task or "t2v"
        kind = guidance or d.get("guidance", "jit")
        scale = float(d.get("scale", 7.5) if guidance_scale is None else guidance_scale)
        image_scale = float(d.get("image_scale", 1.5) if image_guidance_scale is None else image_guidance_scale)
        renorm, solver = renorm or d.get("renorm", "none"), solver or d.get("solver", "euler")
        high_scale = d.get("high_scale") if high_guidance_scale is None else float(high_guidance_scale)
        split_sigma = float(d.get("split_sigma", 1.0) if split_sigma is None else split_sigma)
        steps = int(num_inference_steps or d.get("steps", 50))
        if not (np.isfinite(split_sigma) and split_sigma > 0):
            raise ValueError(f"split_sigma must be a positive number of pixels, got {split_sigma}")
        if high_scale is not None and not np.isfinite(high_scale):
            raise ValueError(f"high_guidance_scale must be finite, got {high_scale}")
        for name, value, allowed in (
            ("task", task, TASKS),
            ("guidance", kind, GUIDANCE_KINDS),
            ("renorm", renorm, RENORM_MODES),
            ("solver", solver, SOLVERS),
            ("schedule", schedule or self.scheduler.config.schedule, SCHEDULES),
            ("output_type", output_type, ("np", "pt", "pil")),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        num_frames = num_frames or (1 if task == "t2i" else int(d.get("num_frames", 16)))
        height, width = height or int(d.get("height", 64)), width or int(d.get("width", 64))
        stride = frame_stride or int(d.get("frame_stride", 1))
        default_given = int(d.get("predict_frames", DEFAULT_PREDICT_FRAMES))
        num_given = num_given_frames or max(1, min(default_given, num_frames - 1))
        indices = given_frame_indices(task, num_frames, num_given)

        b, f = len(prompts), self.downsample
        shape = (b, self.latent_channels, num_frames, height // f, width // f)
        if height % f or width % f:
            raise ValueError(f"height x width = {height}x{width} must be multiples of the autoencoder's {f}")
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; expected {shape} ([B, C, T, h, w])")
        noise = latents.to(self.device, torch.float32).permute(0, 2, 3, 4, 1).contiguous()

        given_latents, mask = (
            torch.zeros_like(noise),
            torch.zeros(noise.shape[:2], dtype=torch.bool, device=self.device),
        )
        if indices:
            pixels = self._given_pixels(task, image, last_image, video, height, width, len(indices))
            encoded = self.encode_frames(pixels).expand(b, -1, -1, -1, -1)
            given_latents[:, list(indices)] = encoded
            mask[:, list(indices)] = True
        elif any(v is not None for v in (image, last_image, video)):
            raise ValueError(f"task {task!r} takes no image or video")
        null_image = d.get("null_image", "noise")
        if null_image not in NULL_IMAGES:
            raise ValueError(f"model_index.json: stiv.null_image {null_image!r} is not one of {NULL_IMAGES}")
        given = _Given(given_latents, mask, noise, null_image)

        cond = self.encode_prompt(prompts)
        null = self.encode_prompt([""])
        micro = micro_conditions(orig_h=height, orig_w=width, frame_stride=stride, num_frames=num_frames)
        cond["micro"] = torch.from_numpy(micro).to(self.device)[None].expand(b, -1)

        self.scheduler.set_timesteps(steps, device=self.device, schedule=schedule)
        times = self.scheduler.times
        args = (cond, null, given, kind, scale, image_scale, renorm, high_scale, split_sigma)
        x = given.replace(noise)
        for i in self.progress_bar(range(steps)):
            v0 = self._velocity(x, times[i], *args)
            x_next = given.replace(self.scheduler.step(v0, i, x))
            if solver == "heun":
                v1 = self._velocity(x_next, times[i + 1], *args)
                x_next = given.replace(self.scheduler.step(0.5 * (v0 + v1), i, x))
            x = x_next

        frames = (self.decode_latents(x) + 1.0) / 2.0  # [B, T, H, W, 3] in [0, 1]
        if output_type == "pt":
            frames = frames.permute(0, 1, 4, 2, 3)
        elif output_type == "np":
            frames = frames.cpu().numpy()
        else:
            from PIL import Image

            u8 = (frames * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            frames = [[Image.fromarray(fr) for fr in clip] for clip in u8]
        self.maybe_free_model_hooks()
        return STIVPipelineOutput(frames=frames) if return_dict else (frames,)

    def _given_pixels(self, task, image, last_image, video, height, width, count) -> torch.Tensor:
        """The task's conditioning pixels ``[1 or B, count, H, W, 3]``."""
        if task in ("predict", "upsample"):
            if video is None:
                raise ValueError(f"task {task!r} needs video=")
            pixels = self._pixels(video, height, width, "video", video=True)
            if pixels.shape[1] < count:
                raise ValueError(f"video has {pixels.shape[1]} frames; task {task!r} needs {count}")
            return pixels[:, :count]
        needed = (("image", image), ("last_image", last_image))[: 2 if task == "interpolate" else 1]
        for name, value in needed:
            if value is None:
                raise ValueError(f"task {task!r} needs {name}=")
        parts = [self._pixels(v, height, width, n, video=False) for n, v in needed]
        batch = max(p.shape[0] for p in parts)
        return torch.cat([p.expand(batch, -1, -1, -1, -1) for p in parts], dim=1)
