"""Fixed 3D sin-cos absolute position embedding, added to the patch tokens
(``model.pos_embed='sincos'``; the default ``'none'`` is the paper's RoPE-only model).

STIV encodes position with RoPE alone (§2.1: RoPE replaced the absolute embedding of its T2I
baseline). RoPE is relative, so from pure noise a RoPE-only model has nothing that tells frame 0
from frame 3 or the centre from a corner (``tests/test_model.py``: identical frames get identical
outputs). The CPU demo adds this table on top of RoPE so that T2V can place the first frame and
follow the direction word within its short budget (README "What the demo shows").

Each of (frame, row, column) gets ``2·(dim // 6)`` channels: ``sin`` then ``cos`` of
``position · POS_EMBED_THETA^(-i/k)``, ``i < k = dim // 6``; leftover channels are zero. Positions
beyond ``ref`` are interpolated into it as for RoPE (§2.4).
"""

from __future__ import annotations

import numpy as np

from stiv_jax.model.rope import interpolated_positions, inverse_frequencies

# Token grids are small (tens of positions per axis), so a small base keeps every frequency
# useful; at base 10000 most channels would hardly change across the grid.
POS_EMBED_THETA = 100.0


def _axis_table(n: int, ref: int, channels: int) -> np.ndarray:
    pos = interpolated_positions(n, ref)
    k = channels // 2
    angles = pos[:, None] * inverse_frequencies(k, POS_EMBED_THETA)[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def sincos_3d(t: int, h: int, w: int, dim: int, *, ref: tuple[int, int, int]) -> np.ndarray:
    """float32 ``[t, h·w, dim]`` table for a ``t × h × w`` token grid (row-major within a frame)."""
    per = (dim // 3) // 2 * 2
    if per == 0:
        raise ValueError(f"pos_embed 'sincos' needs hidden_size >= 6, got {dim}")
    table = np.zeros((t, h, w, dim), np.float32)
    table[..., :per] = _axis_table(t, ref[0], per)[:, None, None]
    table[..., per : 2 * per] = _axis_table(h, ref[1], per)[None, :, None]
    table[..., 2 * per : 3 * per] = _axis_table(w, ref[2], per)[None, None, :]
    return table.reshape(t, h * w, dim)
