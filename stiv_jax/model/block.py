"""The STIV block (§2.1–2.2, Fig. 3).

In order, each with a residual connection:

1. spatial self-attention over the tokens of each frame (2D RoPE, QK-norm), AdaLN-modulated with
   sandwich norm: ``x + gate · LN(attn(LN(x)·(1 + scale) + shift))``;
2. temporal self-attention over the frames of each spatial position (1D RoPE, QK-norm,
   non-causal), sandwich norm without modulation; output projection zero-initialised;
3. cross-attention to the text tokens (pre-LN, output zero-initialised);
4. MLP, modulated with sandwich norm like (1).

All LayerNorms are stateless (no affine), eps 1e-6, computed in float32. Tokens are
``[B, T', S, d]`` (T' temporal patches, S spatial tokens per frame). With
``attention_layout='joint'`` (ablation) step 1 attends over all T'·S tokens and step 2 is absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model.attention import Attention
from stiv_jax.model.conditioning import NUM_MODULATIONS
from stiv_jax.model.layers import MLP, layer_norm, modulate
from stiv_jax.parallel.rules import constrain

SPATIAL_ATTN = "spatial_attn_out"
TEMPORAL_ATTN = "temporal_attn_out"

Rope = tuple[jax.Array, jax.Array]


class STIVBlock(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, impl=cfg.attention_impl, dtype=dtype, param_dtype=param_dtype)
        self.eps = cfg.ln_eps
        self.dtype = dtype
        self.joint = cfg.attention_layout == "joint"
        self.spatial_attn = Attention(d, cfg.num_heads, **kw)
        self.temporal_attn = Attention(d, cfg.num_heads, zero_out=True, **kw) if cfg.temporal_attention else None
        self.cross_attn = Attention(d, cfg.num_heads, zero_out=True, **kw)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        # Per-block offsets added to the shared AdaLN output (PixArt-α scale_shift_table).
        table = jax.random.normal(rngs.params(), (NUM_MODULATIONS, d), param_dtype) / d**0.5
        self.modulation = nnx.Param(table, out_sharding=(None, "embed"))

    def __call__(
        self,
        x: jax.Array,
        mod: jax.Array,
        text: jax.Array,
        text_mask: jax.Array,
        spatial_rope: Rope,
        temporal_rope: Rope,
    ) -> jax.Array:
        """``x [B, T', S, d]``, ``mod [B, 6, d]`` (shared AdaLN output), ``text [B, L, d]``,
        ``text_mask [B, L]``, rope tables broadcastable to ``[B, T', S, 1, hd]`` / ``[T', 1, hd]``
        (joint layout: spatial tables with an explicit T' axis)."""
        b, tt, s, d = x.shape
        ln = lambda a: layer_norm(a, self.eps)
        m = (mod + self.modulation[...][None]).astype(jnp.float32)[:, :, None, None, :]  # [B,6,1,1,d]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (m[:, i] for i in range(NUM_MODULATIONS))
        x = constrain(x, ("batch", None, "length", "act_embed"))

        h = modulate(ln(x), shift_a, scale_a).astype(self.dtype)
        if self.joint:  # one sequence of all T'·S tokens
            rope = tuple(a.reshape(a.shape[0], tt * s, 1, a.shape[-1]) for a in spatial_rope)
            h = self.spatial_attn(h.reshape(b, tt * s, d), rope=rope, name=SPATIAL_ATTN).reshape(b, tt, s, d)
        else:
            h = self.spatial_attn(h, rope=spatial_rope, name=SPATIAL_ATTN)
        x = x + gate_a * ln(h)

        if self.temporal_attn is not None and tt > 1:
            h = ln(x).astype(self.dtype).transpose(0, 2, 1, 3)  # [B, S, T', d]
            h = self.temporal_attn(h, rope=temporal_rope, name=TEMPORAL_ATTN)
            x = x + ln(h).transpose(0, 2, 1, 3)

        h = ln(x).astype(self.dtype).reshape(b, tt * s, d)
        h = self.cross_attn(h, text, mask=text_mask[:, None, None, :])
        x = x + h.reshape(b, tt, s, d)

        h = modulate(ln(x), shift_m, scale_m).astype(self.dtype)
        x = x + gate_m * ln(self.mlp(h))
        return x.astype(jnp.float32)
