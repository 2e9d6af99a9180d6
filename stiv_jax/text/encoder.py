"""The frozen prompt encoder as the DiT sees it: ``encode(ids, mask) -> (tokens, pooled)``.

STIV (§2.1, §3.1): token states feed cross-attention; the pooled embedding feeds the singleton
condition. For CLIP the pooled embedding is the state at the model's pooling position (STIV:
the last real token) — or its ``text_projection`` when ``use_projection``; T5 has no pooled token,
so its pooled embedding is the mean of the valid token states (an assumption, documented here).
Both come out in float32 with padding positions of ``tokens`` zeroed.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.text.clip import CLIPTextModel
from stiv_jax.text.t5 import T5Encoder


class TextEncoder(nnx.Module):
    """Wraps a CLIP or T5 module; an NNX pytree, so it can be passed into jitted functions."""

    def __init__(self, model: CLIPTextModel | T5Encoder, *, use_projection: bool = False):
        if use_projection and not (isinstance(model, CLIPTextModel) and model.config.projection_dim):
            raise ValueError("use_projection needs a CLIP model with a text_projection (projection_dim)")
        self.model = model
        self.use_projection = use_projection

    @property
    def kind(self) -> str:
        return "clip" if isinstance(self.model, CLIPTextModel) else "t5"

    @property
    def dim(self) -> int:
        """Width of the token states (``text_dim`` of the DiT)."""
        return self.model.config.width

    @property
    def pooled_dim(self) -> int:
        return self.model.config.projection_dim if self.use_projection else self.dim

    def encode(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``ids [B, L] int``, ``mask [B, L] bool`` → ``tokens [B, L, dim]``, ``pooled [B, pooled_dim]``.

        Jitted; use ``encoder(ids, mask)`` (the same computation, not jitted) inside a traced step.
        """
        return _encode_jit(self, ids, mask)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank([ids, mask], 2)
        mask = mask.astype(bool)
        if isinstance(self.model, CLIPTextModel):
            out = self.model(ids, mask)
            tokens = out.hidden.astype(jnp.float32)
            pooled = out.projected if self.use_projection else out.pooled
        else:
            tokens = self.model(ids, mask).astype(jnp.float32)
            weights = mask[..., None].astype(jnp.float32)
            pooled = jnp.sum(tokens * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return tokens * mask[..., None], pooled.astype(jnp.float32)


_encode_jit = jax.jit(TextEncoder.__call__)
