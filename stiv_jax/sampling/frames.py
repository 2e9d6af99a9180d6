"""Frame replacement at sampling time (paper §2.3.1, §8).

STIV conditions on images by *replacing* latent frames with clean latents of the given images
(TI2V first frame, prediction first k, interpolation first+last, TUP every other frame) and marks
them with ``cond_mask``. During training the image condition is dropped with p = 0.08 and "the
null image is no replacement": those frames then stay on the ordinary noising path.

:class:`FrameCondition` holds everything needed to reproduce both cases at every ODE step:

- ``latents`` [B, T, ...]: clean latents at the given frames (ignored elsewhere),
- ``mask`` [B, T] bool: True where a frame is given,
- ``noise`` [B, T, ...]: ε₀, the sampler's initial noise (x at t = 0).

The ODE state holds the clean latents at given frames (:meth:`replace`, applied to x0 and after
every step, so they appear unchanged at every step). A branch WITH the image condition sees the
state as it is and ``cond_mask = mask``. A branch WITHOUT it (JIT-CFG's unconditional branch,
SIT's ∅∅ branch) must see what training showed when the image was dropped (the run's
``null_image``, flow/tasks.py): with ``noise``, the given frames on the forward noising path
x_t = t·latents + (1 − t)·ε₀ and ``cond_mask = False``; with ``zeros`` (multi-view, App. J.3), zero
latents at the given frames, still marked given (:meth:`unconditioned`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

from stiv_jax.flow.task_table import NULL_IMAGES


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FrameCondition:
    """Given (replaced) latent frames for one sampling run; see the module docstring."""

    latents: jax.Array
    mask: jax.Array
    noise: jax.Array

    @classmethod
    def create(cls, latents: jax.Array, mask: jax.Array, noise: jax.Array) -> FrameCondition:
        chex.assert_rank(mask, 2)
        chex.assert_equal_shape([latents, noise])
        chex.assert_equal_shape_prefix([latents, mask], 2)
        return cls(latents=jnp.asarray(latents, noise.dtype), mask=jnp.asarray(mask, bool), noise=noise)

    @classmethod
    def none(cls, noise: jax.Array) -> FrameCondition:
        """No given frames (T2V / T2I)."""
        return cls.create(jnp.zeros_like(noise), jnp.zeros(noise.shape[:2], bool), noise)

    @classmethod
    def from_given(cls, given: jax.Array, indices: Sequence[int], noise: jax.Array) -> FrameCondition:
        """Places ``given`` [B, G, ...] clean latents at frame ``indices`` (G of them) of ``noise``."""
        num_frames = noise.shape[1]
        if len(indices) != given.shape[1]:
            raise ValueError(f"{given.shape[1]} given frames but {len(indices)} indices {indices}")
        if any(not 0 <= i < num_frames for i in indices) or len(set(indices)) != len(indices):
            raise ValueError(f"frame indices {indices} must be distinct and in [0, {num_frames})")
        chex.assert_equal_shape([given[:, :1], noise[:, :1]])
        idx = jnp.asarray(indices, jnp.int32)
        latents = jnp.zeros_like(noise).at[:, idx].set(given.astype(noise.dtype))
        mask = jnp.zeros(noise.shape[:2], bool).at[:, idx].set(True)
        return cls.create(latents, mask, noise)

    def _frame_mask(self, x: jax.Array) -> jax.Array:
        return self.mask.reshape(self.mask.shape + (1,) * (x.ndim - 2))

    def replace(self, x: jax.Array, t: jax.Array | None = None) -> jax.Array:
        """State with the clean latents re-inserted at given frames (``ode.integrate``'s hook)."""
        del t
        return jnp.where(self._frame_mask(x), self.latents, x)

    def unconditioned(self, x: jax.Array, t: jax.Array, null_image: str = "noise") -> tuple[jax.Array, jax.Array]:
        """Model input and ``cond_mask`` for a branch without the image (module docstring)."""
        if null_image == "zeros":
            return jnp.where(self._frame_mask(x), jnp.zeros_like(x), x), self.mask
        if null_image != "noise":
            raise ValueError(f"unknown null_image {null_image!r}; expected one of {NULL_IMAGES}")
        t = jnp.asarray(t, x.dtype)
        noised = t * self.latents + (1.0 - t) * self.noise
        return jnp.where(self._frame_mask(x), noised, x), jnp.zeros_like(self.mask)

    def zero_given(self, v: jax.Array) -> jax.Array:
        """Zeroes velocities at given frames (they are overwritten by :meth:`replace` anyway)."""
        return jnp.where(self._frame_mask(v), jnp.zeros_like(v), v)
