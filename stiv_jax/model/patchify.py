"""Patch embedding ("cubify") and its inverse (App. B), plus the frame-condition indicator.

Video latents ``[B, T, H, W, C]`` are cut into ``pt×p×p`` cubes (temporal 2, spatial 2×2) and
projected by one linear layer — a 3D convolution with stride = kernel. The kernel is stored as
``(pt, p, p, C, d)``. An image (T = 1) uses the kernel summed over time, so an image gives exactly
the token of the static two-frame video and T2I weights are video weights (no inflation step).
The output layer maps each token back to ``pt×p×p×C``; an image takes the mean over the temporal
kernel. T2I training keeps the temporal slices of the output kernel equal (they receive identical
gradients from a zero/equal init), so a static video then reproduces the image output per frame.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx


class PatchEmbed(nnx.Module):
    def __init__(
        self,
        channels: int,
        dim: int,
        *,
        patch: int,
        temporal_patch: int,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.p, self.pt, self.channels, self.dtype = patch, temporal_patch, channels, dtype
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2, 3), out_axis=4)
        init = nnx.with_partitioning(init, (None, None, None, None, "embed"))
        self.kernel = nnx.Param(init(rngs.params(), (temporal_patch, patch, patch, channels, dim), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), out_sharding=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, T, H, W, C] -> [B, T', H/p, W/p, d]`` with ``T' = T/pt`` (or 1 for images)."""
        b, t, h, w, c = x.shape
        chex.assert_equal(c, self.channels)
        p, pt = self.p, self.pt
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} not divisible by patch {p}")
        kernel = self.kernel[...]
        if t == 1:
            kernel, pt = kernel.sum(axis=0, keepdims=True), 1
        elif t % pt:
            raise ValueError(
                f"{t} latent frames: video length must be a multiple of temporal patch {pt} (or 1 for images)"
            )
        x = x.reshape(b, t // pt, pt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(b, t // pt, h // p, w // p, pt * p * p * c).astype(self.dtype)
        y = x @ kernel.reshape(-1, kernel.shape[-1]).astype(self.dtype)
        return y + self.bias[...].astype(self.dtype)


class Unpatchify(nnx.Module):
    """Zero-initialised output projection ``d -> pt·p·p·C`` and the inverse rearrangement."""

    def __init__(
        self, dim: int, channels: int, *, patch: int, temporal_patch: int, rngs: nnx.Rngs, param_dtype=jnp.float32
    ):
        del rngs
        self.p, self.pt, self.channels = patch, temporal_patch, channels
        self.kernel = nnx.Param(
            jnp.zeros((dim, temporal_patch, patch, patch, channels), param_dtype),
            out_sharding=("embed", None, None, None, None),
        )
        self.bias = nnx.Param(jnp.zeros((patch, patch, channels), param_dtype), out_sharding=(None, None, None))

    def __call__(self, tokens: jax.Array, num_frames: int) -> jax.Array:
        """``[B, T', h, w, d] -> [B, T, h·p, w·p, C]`` in float32."""
        b, tt, h, w, d = tokens.shape
        p, c = self.p, self.channels
        kernel = self.kernel[...]
        pt = self.pt
        if num_frames == 1:
            kernel, pt = kernel.mean(axis=1, keepdims=True), 1
        chex.assert_equal(tt * pt, num_frames)
        y = tokens.astype(jnp.float32) @ kernel.reshape(d, -1).astype(jnp.float32)
        y = y.reshape(b, tt, h, w, pt, p, p, c) + self.bias[...]
        y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return y.reshape(b, tt * pt, h * p, w * p, c)


class FrameConditionIndicator(nnx.Module):
    """Learned per-frame embedding for frames replaced by clean conditioning latents (§2.3.1).

    ``cond_mask [B, T]`` (True = replaced) is folded into temporal patches like the latents, with
    a zero-initialised ``(pt, d)`` kernel, so an untrained indicator changes nothing.
    """

    def __init__(self, dim: int, *, temporal_patch: int, param_dtype=jnp.float32):
        self.pt = temporal_patch
        self.kernel = nnx.Param(jnp.zeros((temporal_patch, dim), param_dtype), out_sharding=(None, "embed"))

    def __call__(self, cond_mask: jax.Array) -> jax.Array:
        """``[B, T] -> [B, T', 1, d]``, to add to every spatial token of each temporal patch."""
        b, t = cond_mask.shape
        kernel = self.kernel[...]
        pt = self.pt
        if t == 1:
            kernel, pt = kernel.sum(axis=0, keepdims=True), 1
        m = cond_mask.astype(jnp.float32).reshape(b, t // pt, pt)
        return jnp.einsum("btf,fd->btd", m, kernel)[:, :, None, :]
