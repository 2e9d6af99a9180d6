"""The SDXL-style micro-conditions of a clip (§2.1 "Singleton Condition", App. B): what they are and
in which order the DiT reads them. numpy only (no JAX), so the PyTorch pipeline (stiv_jax/export)
builds the same rows."""

from __future__ import annotations

import numpy as np

#: The SDXL-style micro-conditions of a clip (§2.1 "Singleton Condition", App. B), in this order.
MICRO_FIELDS = ("orig_h", "orig_w", "crop_top", "crop_left", "frame_stride", "num_frames")


def micro_conditions(
    *,
    orig_h: float,
    orig_w: float,
    crop_top: float = 0,
    crop_left: float = 0,
    frame_stride: float = 1,
    num_frames: float,
) -> np.ndarray:
    """One clip's micro-condition row ``[len(MICRO_FIELDS)]`` (float32), what the DiT reads."""
    return np.array([orig_h, orig_w, crop_top, crop_left, frame_stride, num_frames], np.float32)
