"""Helpers shared by the model tests: random inputs and fully randomised parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from stiv_jax.model.config import get_model_config
from stiv_jax.model.dit import STIV


def tiny_config(**overrides):
    return get_model_config("tiny", **overrides)


def make_inputs(cfg, batch=2, frames=4, size=8, text_len=5, seed=0, cond=True):
    rng = np.random.default_rng(seed)
    text_mask = np.ones((batch, text_len), bool)
    text_mask[0, 3:] = False  # padded prompt
    cond_mask = np.zeros((batch, frames), bool)
    if cond:
        cond_mask[:, 0] = True
    x = rng.standard_normal((batch, frames, size, size, cfg.in_channels)).astype(np.float32)
    t = rng.uniform(size=(batch,)).astype(np.float32)
    kw = dict(
        text=jnp.asarray(rng.standard_normal((batch, text_len, cfg.text_dim)), jnp.float32),
        text_mask=jnp.asarray(text_mask),
        pooled_text=jnp.asarray(rng.standard_normal((batch, cfg.text_dim)), jnp.float32),
        micro=jnp.asarray(rng.uniform(0, 64, (batch, 6)), jnp.float32),
        cond_mask=jnp.asarray(cond_mask),
    )
    return jnp.asarray(x), jnp.asarray(t), kw


def random_model(cfg, seed: int = 0, scale: float = 0.05, tie_output_frames: bool = False) -> STIV:
    """A model whose every parameter is random (zero-initialised output layers and indicator
    included, so no branch is trivially inactive): N(0, scale²), RMSNorm scales 1 + N(0, scale²).
    Built abstractly and filled from numpy (much faster on CPU than init + perturb).
    ``tie_output_frames`` keeps the output kernel equal across the temporal patch (the invariant
    image-only training preserves, see patchify.py)."""
    model = jax.eval_shape(lambda: STIV(cfg, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    for path, v in flat.items():
        base = 1.0 if path[-1] == "scale" else 0.0
        flat[path] = (base + scale * rng.standard_normal(v.shape)).astype(v.dtype)
    if tie_output_frames:
        kern = flat[("unpatchify", "kernel")]
        flat[("unpatchify", "kernel")] = np.broadcast_to(kern[:, :1], kern.shape).copy()
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))
    nnx.update(model, state)
    return model


@nnx.jit
def forward(model, x, t, kw, keep_idx=None):
    return model(x, t, keep_idx=keep_idx, **kw)


def build(cfg, seed=0):
    return STIV(cfg, rngs=nnx.Rngs(params=seed))
