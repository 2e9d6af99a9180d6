"""The singleton condition and the shared AdaLN (§2.1 "Singleton Condition", App. D).

``c = LN(MLP(sin(1000·t))) + LN(Linear(pooled_text)) + LN(MLP(sin(micro)))`` with stateless
LayerNorms ("Cond. norm", Table 2). One shared AdaLN (SiLU → Linear(d, 6d)) turns ``c`` into the
six shift/scale/gate vectors for every block; each block adds its own learnable ``(6, d)`` offset
table (PixArt-α adaLN-single). Micro-conditions are the SDXL-style scalars
(orig_h, orig_w, crop_top, crop_left, frame_stride, num_frames): each gets a 256-d sinusoid, the
six are concatenated and projected by one MLP.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.layers import dense, layer_norm, sinusoidal_embedding

NUM_MODULATIONS = 6  # shift/scale/gate for spatial attention and for the MLP


class EmbedMLP(nnx.Module):
    """Linear → SiLU → Linear, N(0, 0.02) init (PixArt-α TimestepEmbedder)."""

    def __init__(self, din: int, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.fc1 = dense(din, dim, ("cond", "embed"), std=0.02, rngs=rngs, param_dtype=param_dtype)
        self.fc2 = dense(dim, dim, ("embed", "embed"), std=0.02, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.silu(self.fc1(x)))


class SingletonCondition(nnx.Module):
    """Timestep + pooled text + micro-conditions → one ``[B, d]`` vector ``c``."""

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        freq_dim: int = 256,
        num_micro: int = 6,
        eps: float = 1e-6,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
    ):
        self.freq_dim = freq_dim
        self.num_micro = num_micro
        self.eps = eps
        self.timestep = EmbedMLP(freq_dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.pooled_text = dense(text_dim, dim, ("text_embed", "embed"), std=0.02, rngs=rngs, param_dtype=param_dtype)
        self.micro = EmbedMLP(freq_dim * num_micro, dim, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, t: jax.Array, pooled_text: jax.Array, micro: jax.Array) -> jax.Array:
        b = t.shape[0]
        chex.assert_shape(t, (b,))
        chex.assert_shape(micro, (b, self.num_micro))
        chex.assert_rank(pooled_text, 2)
        t_emb = self.timestep(sinusoidal_embedding(1000.0 * t, self.freq_dim))
        m_emb = self.micro(sinusoidal_embedding(micro, self.freq_dim).reshape(b, -1))
        p_emb = self.pooled_text(pooled_text.astype(jnp.float32))
        return sum(layer_norm(e, self.eps) for e in (t_emb, p_emb, m_emb))


class SharedAdaLN(nnx.Module):
    """SiLU → Linear(d, 6d), shared by all blocks ("Shared AdaLN", App. D)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.proj = dense(dim, NUM_MODULATIONS * dim, ("embed", "mlp"), std=0.02, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, c: jax.Array) -> jax.Array:
        """``[B, d] -> [B, 6, d]``."""
        return self.proj(jax.nn.silu(c)).reshape(c.shape[0], NUM_MODULATIONS, -1)
