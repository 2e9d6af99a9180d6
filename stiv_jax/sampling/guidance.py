"""Classifier-free guidance for STIV: text CFG, JIT-CFG, SIT-CFG and CFG-renorm (paper §2, §3).

With F(text, image) the model's velocity (∅ = condition dropped) and s, s_img, s_txt scales:

- ``none``: F(cT, cI)
- ``cfg`` (text only, the image kept in both branches): F(∅, cI) + s·(F(cT, cI) − F(∅, cI))
- ``jit`` (STIV JIT-CFG, §2.3.2): F(∅, ∅) + s·(F(cT, cI) − F(∅, ∅))
- ``sit`` (STIV SIT-CFG, §3.4.2):
  F(∅, ∅) + s_img·(F(∅, cI) − F(∅, ∅)) + s_txt·(F(cT, cI) − F(∅, cI))

Identities (tested): every kind with scale 1 (sit: s_img = s_txt = 1) returns F(cT, cI); without
a given image (cI = ∅) ``jit`` equals ``cfg`` (plain text CFG for T2V); ``sit`` with
s_img = s_txt = s equals ``jit`` with s (the sum telescopes); ``sit`` with s_img = 1 equals ``cfg``
with s = s_txt.

All branches go through ONE model call on the batch-concatenated inputs (2B for cfg/jit, 3B for
sit): every leaf of the condition pytree is concatenated along the batch axis.

Frequency-decoupled guidance (FDG; Sadat et al. 2025, "Guidance in the Frequency Domain Enables
High-Fidelity Sampling at Low CFG Scales"), on when ``high_scale`` h is set: the low spatial
frequencies are guided as above, the high ones with every scale h, i.e. with g the guided velocity
and g_h = F(∅, ∅ or cI) + h·(F(cT, cI) − F(∅, ∅ or cI)) (the last branch, h for every scale):
g_fdg = g_h + L(g − g_h), L a Gaussian low-pass of std ``split_sigma`` pixels over each frame (the
latents unfolded to pixels first when they are the pixel autoencoder's f×f blocks, ``subpixels``
= f). For cfg / jit: F(∅) + s·L(Δ) + h·(Δ − L(Δ)), Δ = F(cT, cI) − F(∅); h = s is plain guidance.

CFG-renorm (App. A/D): ``rescale`` sets the guided velocity's norm to the conditional velocity's
norm, per sample (norm over all non-batch dims), keeping its direction (STIV's formula); ``clip``
only scales down when the guided norm is larger (Lumina-Image-2.0 / ComfyUI RenormCFG).

Velocities at given (replaced) frames are zeroed before combining: the ODE overwrites those frames
anyway, the model is trained without loss there, and so the renorm norm covers generated frames.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp

from stiv_jax.errors import ConfigError
from stiv_jax.flow.task_table import NULL_IMAGES
from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.kinds import GUIDANCE_BRANCHES, GUIDANCE_KINDS, RENORM_MODES, gaussian_taps
from stiv_jax.vae.pixel import depth_to_space, space_to_depth

Cond = Mapping[str, Any]
ModelFn = Callable[[jax.Array, jax.Array, Cond], jax.Array]

TEXT_KEYS = ("text", "text_mask", "pooled_text")
MAX_SCALE = 1e3  # |guidance scale|: far beyond any useful value, and well inside float32
MAX_SPLIT_SIGMA = 64.0  # pixels: the low-pass of FDG is then the frame's mean


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Guidance:
    """Guidance kind, scales (traced: changing them does not recompile) and renorm mode.

    ``scale`` is s for cfg/jit and s_txt for sit; ``image_scale`` is s_img (sit only).
    Defaults follow the paper: JIT-CFG s = 7.5 (App. B); SIT-CFG s_img = 1.5, s_txt = 7.5. They are
    the sampler's defaults (``options.SampleOptions`` and ``stiv-sample`` read them here).
    ``null_image``: what the branches without the image see, as the run was trained
    (``config.null_image``, ``frames.FrameCondition.unconditioned``). ``high_scale`` (None: off),
    ``split_sigma`` and ``subpixels`` (the run's, not a choice): FDG (module docstring).
    """

    kind: str = dataclasses.field(default="jit", metadata=dict(static=True))
    scale: float = 7.5
    image_scale: float = 1.5
    renorm: str = dataclasses.field(default="none", metadata=dict(static=True))
    null_image: str = dataclasses.field(default="noise", metadata=dict(static=True))
    high_scale: float | None = None
    split_sigma: float = dataclasses.field(default=1.0, metadata=dict(static=True))
    subpixels: int = dataclasses.field(default=1, metadata=dict(static=True))

    def __post_init__(self):
        if self.kind not in GUIDANCE_KINDS:
            raise ValueError(f"unknown guidance {self.kind!r}; expected one of {GUIDANCE_KINDS}")
        if self.renorm not in RENORM_MODES:
            raise ValueError(f"unknown renorm {self.renorm!r}; expected one of {RENORM_MODES}")
        if self.null_image not in NULL_IMAGES:
            raise ValueError(f"unknown null_image {self.null_image!r}; expected one of {NULL_IMAGES}")

    def check_scales(self) -> Guidance:
        """Raises :class:`ConfigError` naming the flag unless each scale is finite with
        ``|s| <= MAX_SCALE`` (before tracing: a NaN scale draws black frames). Returns ``self``."""
        for name in ("scale", "image_scale", "high_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and abs(value) <= MAX_SCALE):
                raise ConfigError(
                    f"{name} (--{name}) must be a finite number in [-{MAX_SCALE:g}, {MAX_SCALE:g}], got {value}"
                )
        if not (math.isfinite(self.split_sigma) and 0 < self.split_sigma <= MAX_SPLIT_SIGMA):
            raise ConfigError(
                f"split_sigma (--split_sigma) must be in (0, {MAX_SPLIT_SIGMA:g}] pixels, got {self.split_sigma}"
            )
        return self


def low_pass(x: jax.Array, sigma: float, subpixels: int = 1) -> jax.Array:
    """Gaussian low-pass (std ``sigma`` pixels, edge pixels repeated) of each frame of latents
    ``[B, T, h, w, C]``; with ``subpixels`` = f > 1 the channels are f×f pixel blocks
    (``vae/pixel.py``), blurred as the pixels they hold."""
    chex.assert_rank(x, 5)
    p = depth_to_space(x, subpixels) if subpixels > 1 else x
    taps = gaussian_taps(sigma)
    radius = len(taps) // 2
    for axis in (2, 3):
        n = p.shape[axis]
        p = sum(w * jnp.take(p, jnp.clip(jnp.arange(n) + k - radius, 0, n - 1), axis=axis) for k, w in enumerate(taps))
    return space_to_depth(p, subpixels) if subpixels > 1 else p


def renormalize(guided: jax.Array, conditional: jax.Array, mode: str) -> jax.Array:
    """CFG-renorm of ``guided`` against ``conditional`` per sample (all non-batch dims)."""
    chex.assert_equal_shape([guided, conditional])
    if mode == "none":
        return guided
    if mode not in RENORM_MODES:
        raise ValueError(f"unknown renorm {mode!r}; expected one of {RENORM_MODES}")
    axes = tuple(range(1, guided.ndim))
    norm_c = jnp.sqrt(jnp.sum(jnp.square(conditional), axis=axes, keepdims=True))
    norm_g = jnp.sqrt(jnp.sum(jnp.square(guided), axis=axes, keepdims=True))
    ratio = norm_c / jnp.maximum(norm_g, jnp.finfo(guided.dtype).tiny)
    if mode == "clip":
        ratio = jnp.minimum(ratio, 1.0)
    return guided * ratio


def _broadcast_batch(tree: Cond, batch: int) -> dict:
    """Broadcasts leaves with leading dim 1 (e.g. one encoded empty prompt) to ``batch``."""
    return {k: jnp.broadcast_to(v, (batch,) + v.shape[1:]) for k, v in tree.items()}


def _branch(x, t, cond, null_text, frames, null_image, with_text, with_image):
    branch_cond = dict(cond)
    if not with_text:
        branch_cond.update(null_text)
    if with_image:
        branch_cond["cond_mask"] = frames.mask
        return x, branch_cond
    x, branch_cond["cond_mask"] = frames.unconditioned(x, t, null_image)
    return x, branch_cond


def guided_velocity(
    model_fn: ModelFn,
    x: jax.Array,
    t: jax.Array,
    cond: Cond,
    null_cond: Cond | None,
    frames: FrameCondition,
    guidance: Guidance,
) -> jax.Array:
    """Guided velocity at state ``x`` [B, T, ...] and scalar time ``t`` (module docstring).

    ``cond`` holds text [B, L, D], text_mask [B, L], pooled_text [B, D], micro [B, 6] (plus any
    extra model inputs, passed through); ``null_cond`` holds the text leaves of the empty prompt
    (leading dim B or 1). ``model_fn(x, t, cond) -> v`` is called exactly once.
    """
    chex.assert_rank(x, 5)
    batch = x.shape[0]
    branches = GUIDANCE_BRANCHES[guidance.kind]
    null_text = {}
    if any(not with_text for with_text, _ in branches):
        missing = [k for k in TEXT_KEYS if null_cond is None or k not in null_cond]
        if missing:
            raise ValueError(f"guidance {guidance.kind!r} needs null_cond with keys {missing}")
        missing = [k for k in TEXT_KEYS if k not in cond]
        if missing:
            raise ValueError(f"cond is missing keys {missing}")
        null_text = _broadcast_batch({k: null_cond[k] for k in TEXT_KEYS}, batch)
    inputs = [_branch(x, t, cond, null_text, frames, guidance.null_image, *b) for b in branches]
    xs, conds = zip(*inputs)
    x_all = jnp.concatenate(xs, axis=0)
    cond_all = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *conds)
    t_all = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x_all.shape[0],))
    v_all = model_fn(x_all, t_all, cond_all)
    chex.assert_shape(v_all, x_all.shape)
    v = [frames.zero_given(vb) for vb in jnp.split(v_all, len(branches), axis=0)]

    s = guidance.scale
    if guidance.kind == "none":
        return v[0]
    if guidance.kind in ("cfg", "jit"):
        cond_v, uncond_v = v
        guided = uncond_v + s * (cond_v - uncond_v)
    else:
        cond_v, image_v, uncond_v = v
        guided = uncond_v + guidance.image_scale * (image_v - uncond_v) + s * (cond_v - image_v)
    if guidance.high_scale is not None:
        high = v[-1] + guidance.high_scale * (cond_v - v[-1])
        guided = high + low_pass(guided - high, guidance.split_sigma, guidance.subpixels)
    return renormalize(guided, cond_v, guidance.renorm)
