"""Helpers shared by the model tests: random inputs and fully randomised parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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


def randomize(model: STIV, seed: int = 1, scale: float = 0.05, tie_output_frames: bool = False) -> STIV:
    """Replaces every parameter (zero-initialised ones included) by random values, so that no
    branch is trivially inactive. ``tie_output_frames`` keeps the output kernel equal across the
    temporal patch (the invariant image-only training preserves, see patchify.py)."""
    state = nnx.state(model, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tree, leaves))
    if tie_output_frames:
        kern = model.unpatchify.kernel[...]
        model.unpatchify.kernel[...] = jnp.broadcast_to(kern[:, :1], kern.shape)
    return model


def build(cfg, seed=0):
    return STIV(cfg, rngs=nnx.Rngs(params=seed))
