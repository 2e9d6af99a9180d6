"""Flow-matching loss with frame replacement and MaskDiT masks (§2.1, §2.2, §2.3.1).

``loss = mean over (non-replaced frames × visible tokens) of ‖F(x_t) − (x1 − ε)‖²`` — replaced
(clean conditioning) frames carry no loss (§2.3.1: a loss on them hurt), and with MaskDiT only
visible tokens are denoised. The optional MAE term (MaskDiT) asks the decoder to reconstruct the
noisy input ``x_t`` at masked tokens, weighted by ``mae_weight``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def pixel_keep_mask(token_mask: jax.Array, grid: tuple[int, int], patch: int) -> jax.Array:
    """Spatial token mask ``[B, S]`` → latent-pixel mask ``[B, H, W]``."""
    b = token_mask.shape[0]
    m = token_mask.reshape(b, grid[0], 1, grid[1], 1)
    m = jnp.broadcast_to(m, (b, grid[0], patch, grid[1], patch))
    return m.reshape(b, grid[0] * patch, grid[1] * patch)


def _masked_mean(err: jax.Array, weight: jax.Array) -> jax.Array:
    """Mean of ``err [B,T,H,W,C]`` over elements where ``weight [B,T,H,W]`` is set."""
    num = jnp.sum(err * weight[..., None])
    return num / jnp.maximum(jnp.sum(weight) * err.shape[-1], 1.0)


def flow_matching_loss(
    pred: jax.Array,
    target: jax.Array,
    frame_loss_mask: jax.Array,
    visible: jax.Array | None = None,
    *,
    x_t: jax.Array | None = None,
    mae_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns ``(total, {'denoise': ..., 'mae': ...})``.

    ``pred``/``target``/``x_t``: ``[B, T, H, W, C]``; ``frame_loss_mask [B, T]`` (True = frame is
    denoised, False = replaced); ``visible [B, H, W]`` MaskDiT latent-pixel mask or ``None``.
    """
    chex.assert_equal_shape([pred, target])
    b, t, h, w, _ = pred.shape
    chex.assert_shape(frame_loss_mask, (b, t))
    frames = frame_loss_mask.astype(jnp.float32)[:, :, None, None]
    vis = jnp.ones((b, 1, h, w), jnp.float32) if visible is None else visible.astype(jnp.float32)[:, None]
    err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    denoise = _masked_mean(err, frames * vis)
    parts = {"denoise": denoise}
    total = denoise
    if visible is not None and mae_weight > 0.0:
        assert x_t is not None, "the MAE term needs the noisy input x_t"
        mae = _masked_mean(jnp.square(pred.astype(jnp.float32) - x_t.astype(jnp.float32)), frames * (1.0 - vis))
        parts["mae"] = mae
        total = total + mae_weight * mae
    return total, parts
