"""Rotary position embeddings: 2D for spatial attention, 1D for temporal attention (§2.1), with
position interpolation for grids larger than the trained one (§2.4). 3D RoPE serves the full
3D-attention ablation (``model.attention_layout='joint'``), which attends over all frames at once.

Rotation convention: "rotate half" (the head dimension is split into two halves that form the
complex pairs). 2D RoPE (Unified-IO 2 style): the first half of the rotary frequencies encodes the
row index and the second half the column index, so a query/key dot product depends only on the
(Δrow, Δcol) offset.

Interpolation: when a grid axis has more positions ``n`` than the reference ``ref`` the model was
trained on, positions become ``i · ref / n`` so they span the trained range [0, ref) instead of
extrapolating (position interpolation). Grids at or below the reference keep integer positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def interpolated_positions(n: int, ref: int) -> np.ndarray:
    """Positions ``0..n-1``, rescaled by ``ref/n`` when ``n > ref`` (§2.4 RoPE interpolation)."""
    pos = np.arange(n, dtype=np.float32)
    return pos * (ref / n) if n > ref else pos


def inverse_frequencies(num: int, theta: float) -> np.ndarray:
    """``theta^(-i/num)`` for ``i < num``: the rotary (and sin-cos table) frequencies."""
    return 1.0 / (theta ** (np.arange(num, dtype=np.float32) / num))


def rope_1d(n: int, head_dim: int, *, ref: int | None = None, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` tables ``[n, head_dim]`` for a 1D sequence (temporal attention)."""
    pos = interpolated_positions(n, ref if ref is not None else n)
    angles = pos[:, None] * inverse_frequencies(head_dim // 2, theta)[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def rope_2d(
    h: int, w: int, head_dim: int, *, ref: tuple[int, int] | None = None, theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` tables ``[h·w, head_dim]`` for a row-major h×w token grid."""
    ref_h, ref_w = ref if ref is not None else (h, w)
    quarter = head_dim // 4
    inv = inverse_frequencies(quarter, theta)
    ph = interpolated_positions(h, ref_h)
    pw = interpolated_positions(w, ref_w)
    ah = np.repeat(ph[:, None] * inv[None, :], w, axis=0)  # [h*w, quarter], row index
    aw = np.tile(pw[:, None] * inv[None, :], (h, 1))  # [h*w, quarter], column index
    angles = np.concatenate([ah, aw], axis=-1)  # [h*w, head_dim/2]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def rope_3d(
    t: int, h: int, w: int, head_dim: int, *, ref: tuple[int, int, int] | None = None, theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` tables ``[t·h·w, head_dim]`` for a frame-major t×h×w token grid.

    Of the ``head_dim/2`` rotary frequencies, rows and columns get ``3/8`` each and time the
    rest (64-d heads: 12 + 12 + 8), so scores depend only on the (Δt, Δrow, Δcol) offset.
    """
    ref_t, ref_h, ref_w = ref if ref is not None else (t, h, w)
    half = head_dim // 2
    spatial = 3 * half // 8
    temporal = half - 2 * spatial
    if spatial < 1 or temporal < 1:
        raise ValueError(f"head_dim={head_dim} too small for 3D RoPE")
    grid = np.meshgrid(
        interpolated_positions(t, ref_t),
        interpolated_positions(h, ref_h),
        interpolated_positions(w, ref_w),
        indexing="ij",
    )
    angles = np.concatenate(
        [
            pos.reshape(-1, 1) * inverse_frequencies(n, theta)[None, :]
            for pos, n in zip(grid, (temporal, spatial, spatial))
        ],
        axis=-1,
    )
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates ``x [..., S, heads, head_dim]`` by tables broadcastable to ``[..., S, 1, head_dim]``.

    Computed in float32 and returned in ``x.dtype``.
    """
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)
