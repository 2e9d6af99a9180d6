"""Analytic model FLOPs of the STIV DiT (for TFLOP/s logging and MFU benchmarks).

Counts multiply-adds as 2 FLOPs for every matmul, attention included *in full* (bidirectional
attention computes the whole score matrix; no causal halving). Elementwise work (norms, softmax,
activations, RoPE) is not counted, as is usual for MFU. A training step is 3× the forward
(forward + backward of activations and weights); remat recomputation is *not* counted (model FLOPs,
not hardware FLOPs).
"""

from __future__ import annotations

from stiv_jax.model import maskdit
from stiv_jax.model.config import resolve


def _block_flops(d: int, mlp: int, tt: int, s: int, text_len: int, temporal: bool, joint: bool) -> tuple[float, float]:
    """``(dense, attention)`` FLOPs of one block: projections/MLP, and QKᵀ + AV products."""
    n = tt * s  # tokens in this sample
    seq = n if joint else s  # keys per query: all tokens (joint 3D attention) or the frame's
    dense = 2 * n * 4 * d * d  # self-attn q, k, v, o
    attn = 2 * 2 * n * seq * d
    if temporal and tt > 1:
        dense += 2 * n * 4 * d * d
        attn += 2 * 2 * s * tt * tt * d
    dense += 2 * n * 2 * d * d + 2 * text_len * 2 * d * d  # cross-attn q, o and text k, v
    attn += 2 * 2 * n * text_len * d
    dense += 2 * n * 2 * d * mlp  # MLP
    return float(dense), float(attn)


def forward_flops_by_kind(
    model_cfg, *, frames: int, height: int, width: int, text_len: int, mask_ratio: float = 0.0
) -> dict[str, float]:
    """``{'dense': ..., 'attention': ...}``: one forward pass for one sample of latents
    ``[frames, height, width, C]``, split into weight matmuls and attention score/value products."""
    c = resolve(model_cfg)
    d, p, pt = c.hidden_size, c.patch_size, c.temporal_patch_size
    mlp = int(d * c.mlp_ratio)
    tt = 1 if frames == 1 else frames // pt
    s = (height // p) * (width // p)
    kept = maskdit.num_kept(s, mask_ratio) if maskdit.is_masked(mask_ratio, c.num_decoder_blocks) else s
    patch_in = (1 if frames == 1 else pt) * p * p * c.in_channels
    dense = 2 * tt * s * patch_in * d * 2  # patch embedding + un-patchify
    dense += 2 * text_len * (c.text_dim * d + d * d)  # caption projection
    dense += 2 * (c.freq_dim * d + d * d) * 2 + 2 * c.text_dim * d + 2 * 6 * d * d  # condition + shared AdaLN
    joint = c.attention_layout == "joint"
    main = _block_flops(d, mlp, tt, kept, text_len, c.temporal_attention, joint)
    decoder = _block_flops(d, mlp, tt, s, text_len, c.temporal_attention, joint)
    return dict(
        dense=float(dense + c.num_layers * main[0] + c.num_decoder_blocks * decoder[0]),
        attention=float(c.num_layers * main[1] + c.num_decoder_blocks * decoder[1]),
    )


def forward_flops(model_cfg, *, frames: int, height: int, width: int, text_len: int, mask_ratio: float = 0.0) -> float:
    """FLOPs of one forward pass for one sample of latents ``[frames, height, width, C]``."""
    kinds = forward_flops_by_kind(
        model_cfg, frames=frames, height=height, width=width, text_len=text_len, mask_ratio=mask_ratio
    )
    return kinds["dense"] + kinds["attention"]


def train_step_flops(
    model_cfg, *, batch: int, frames: int, height: int, width: int, text_len: int, mask_ratio: float = 0.0
) -> float:
    """Model FLOPs of one training step (forward + backward = 3 × forward) for ``batch`` samples."""
    return (
        3.0
        * batch
        * forward_flops(model_cfg, frames=frames, height=height, width=width, text_len=text_len, mask_ratio=mask_ratio)
    )
