"""The jitted STIV sampling core: guided velocity integrated over a time grid in ONE jit.

``sample`` runs the whole loop (``lax.scan`` over steps; every step one batched model call for
all guidance branches; frame replacement after every update) as a single compiled program.

The model is either

- an ``nnx.Module`` called as ``model(x, t, **cond)`` (the DiT's call convention). NNX
  modules are pytrees, so their weights are traced jit *arguments* (not baked-in constants), or
- a function ``model_fn(x, t, cond) -> v``; it is a static argument, hashed by identity, so
  define it once to reuse the compiled program.

Guidance scales and the time grid are traced: changing them does not recompile; the guidance
kind, renorm mode, solver and the number of steps do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.sampling.frames import FrameCondition
from stiv_jax.sampling.guidance import Cond, Guidance, ModelFn, guided_velocity
from stiv_jax.sampling.ode import scan_integrate

Model = nnx.Module | ModelFn


@dataclasses.dataclass(frozen=True)
class _StaticFn:
    """A plain ``model_fn(x, t, cond)`` carried as a static jit argument (equal by identity)."""

    fn: ModelFn

    def __call__(self, params: None, x, t, cond):
        return self.fn(x, t, cond)


def _call_module(module: nnx.Module, x, t, cond):
    return module(x, t, **cond)


def _as_apply(model: Model) -> tuple[Callable[..., jax.Array], Any]:
    if isinstance(model, nnx.Module):
        return _call_module, model
    if callable(model):
        return _StaticFn(model), None
    raise TypeError(f"model must be an nnx.Module or a function (x, t, cond) -> v, got {model!r}")


@functools.partial(jax.jit, static_argnames=("apply", "solver", "return_trajectory"))
def _sample(apply, params, noise, cond, null_cond, times, frames, guidance, solver, return_trajectory):
    model_fn = lambda x, t, c: apply(params, x, t, c)
    velocity_fn = lambda x, t: guided_velocity(model_fn, x, t, cond, null_cond, frames, guidance)
    return scan_integrate(
        velocity_fn, noise, times, solver, replace_fn=frames.replace, return_trajectory=return_trajectory
    )


def sample(
    model: Model,
    noise: jax.Array,
    cond: Cond,
    null_cond: Cond | None,
    times: np.ndarray | jax.Array,
    *,
    frames: FrameCondition | None = None,
    guidance: Guidance = Guidance(),
    solver: str = "euler",
    return_trajectory: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Samples latents [B, T, h, w, C] from ``noise`` (the state at t = 0) over ``times``.

    ``cond``: text [B, L, D], text_mask [B, L], pooled_text [B, D], micro [B, 6];
    ``null_cond``: the empty prompt's text leaves (leading dim B or 1; unused by ``none``);
    ``frames``: given latent frames (``FrameCondition`` built with this ``noise``), None for T2V.
    With ``return_trajectory`` also returns the states at every time, [S+1, B, T, h, w, C].
    """
    chex.assert_rank(noise, 5)
    if frames is None:
        frames = FrameCondition.none(noise)
    apply, params = _as_apply(model)
    return _sample(
        apply,
        params,
        noise,
        dict(cond),
        None if null_cond is None else dict(null_cond),
        jnp.asarray(times, jnp.float32),
        frames,
        guidance,
        solver,
        return_trajectory,
    )
