"""A frozen random token-embedding "text encoder" for toy runs and tests.

Real runs use the CLIP/T5 encoders (stiv_jax/text/clip.py, t5.py). For CPU demos a fixed random
``[vocab, dim]`` table (seeded, never trained) is enough: each word maps to a distinct vector the
DiT learns to read through cross-attention. Pooled output = mean of the valid token vectors (the
last real token of a bag of embeddings is always EOS, which would carry no prompt information).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class FrozenTokenEmbedding(nnx.Module):
    def __init__(self, vocab_size: int, dim: int, *, seed: int = 0):
        self.dim = dim
        table = jax.random.normal(jax.random.key(seed), (vocab_size, dim), jnp.float32)
        self.table = nnx.Param(table, out_sharding=("vocab", "text_embed"))

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``ids, mask [B, L]`` → ``(tokens [B, L, dim], pooled [B, dim])``."""
        m = mask.astype(jnp.float32)[..., None]
        tokens = self.table[...][ids] * m
        pooled = tokens.sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
        return tokens, pooled
