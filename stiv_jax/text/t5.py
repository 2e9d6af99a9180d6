"""T5 encoder (v1.1: gated-GELU feed-forward, relative position bias) in Flax NNX.

The alternative text encoder for STIV (the paper tokenizes with T5, App. C; PixArt-α, STIV's base,
encodes with T5-XXL). Numerics follow Hugging Face ``T5EncoderModel``: RMS LayerNorm without mean
or bias, unscaled dot-product attention plus a bucketed relative-position bias computed once (by
the first block's table) and shared by all blocks, pre-norm residual blocks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.text import layers
from stiv_jax.weights.config import PretrainedConfig


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig(PretrainedConfig):
    vocab_size: int = 32128
    width: int = 4096  # d_model
    num_layers: int = 24
    num_heads: int = 64
    head_dim: int = 64  # d_kv
    mlp_dim: int = 10240  # d_ff
    gated: bool = True  # v1.1 gated FFN (wi_0, wi_1); False = original T5 (wi)
    activation: str = "gelu_tanh"  # HF "gelu_new"
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"

    HF_MARKERS = ("d_model",)
    PRESETS = {
        "t5-v1_1-xxl": {},  # google/t5-v1_1-xxl encoder: 4,762,310,656 parameters
        "t5-v1_1-xl": dict(width=2048, num_heads=32, mlp_dim=5120),
        "t5-v1_1-base": dict(width=768, num_layers=12, num_heads=12, mlp_dim=2048),
    }

    def __post_init__(self):
        if self.activation not in layers.ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {sorted(layers.ACTIVATIONS)}")

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> T5EncoderConfig:
        ff = hf.get("feed_forward_proj", "relu")
        gated = ff.startswith("gated-")
        act = ff[len("gated-") :] if gated else ff
        if gated and act == "gelu":  # transformers maps "gated-gelu" (only) to the tanh approximation
            act = "gelu_new"
        return cls(
            vocab_size=hf.get("vocab_size", 32128),
            width=hf["d_model"],
            num_layers=hf.get("num_layers", 6),
            num_heads=hf.get("num_heads", 8),
            head_dim=hf.get("d_kv", 64),
            mlp_dim=hf.get("d_ff", 2048),
            gated=gated,
            activation=layers.hf_activation(act),
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        )


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucketing of ``key_pos - query_pos`` (Mesh TensorFlow's rule).

    Half the buckets per direction; within a direction, distances below ``num_buckets // 4`` get
    their own bucket, larger ones share log-spaced buckets up to ``max_distance``. Computed on the
    host in float32 with the reference's operation order, since sequence lengths are static.
    """
    num_buckets //= 2
    ret = (relative_position > 0).astype(np.int64) * num_buckets
    n = np.abs(relative_position)
    max_exact = num_buckets // 2
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return ret + np.where(n < max_exact, n, large)


class T5Layer(nnx.Module):
    """``x + SelfAttention(RMSNorm(x), bias)``, then ``x + FFN(RMSNorm(x))``."""

    def __init__(self, cfg: T5EncoderConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype)
        self.attn_norm = layers.RMSNorm(cfg.width, cfg.layer_norm_eps, param_dtype=cfg.params_dtype)
        self.attn = layers.SelfAttention(
            cfg.width, cfg.num_heads, cfg.head_dim, rngs=rngs, use_bias=False, scale=1.0, **kw
        )
        self.ff_norm = layers.RMSNorm(cfg.width, cfg.layer_norm_eps, param_dtype=cfg.params_dtype)
        dense = lambda i, o, axes: layers.dense(i, o, axes, rngs=rngs, use_bias=False, **kw)
        self.wi_0 = dense(cfg.width, cfg.mlp_dim, ("embed", "mlp"))
        if cfg.gated:
            self.wi_1 = dense(cfg.width, cfg.mlp_dim, ("embed", "mlp"))
        self.wo = dense(cfg.mlp_dim, cfg.width, ("mlp", "embed"))
        self.activation, self.gated = cfg.activation, cfg.gated

    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x), mask=mask, bias=bias).astype(x.dtype)
        h = self.ff_norm(x)
        g = layers.ACTIVATIONS[self.activation](self.wi_0(h))
        if self.gated:
            g = g * self.wi_1(h)
        return x + self.wo(g).astype(x.dtype)


class T5Encoder(nnx.Module):
    """``(ids [B, L] int, mask [B, L] bool) -> hidden [B, L, width]`` (after the final norm)."""

    def __init__(self, cfg: T5EncoderConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embedding = layers.embedding(
            cfg.vocab_size, cfg.width, ("vocab", "embed"), rngs=rngs, param_dtype=cfg.params_dtype
        )
        self.relative_attention_bias = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (cfg.num_buckets, cfg.num_heads), cfg.params_dtype),
            out_sharding=(None, None),
        )
        self.layers = layers.stacked(lambda r: T5Layer(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = layers.RMSNorm(cfg.width, cfg.layer_norm_eps, param_dtype=cfg.params_dtype)

    def position_bias(self, length: int) -> jax.Array:
        """``[1, heads, L, L]`` additive attention bias from the bucketed relative positions."""
        pos = np.arange(length)
        buckets = relative_position_bucket(
            pos[None, :] - pos[:, None], self.config.num_buckets, self.config.max_distance
        )
        table = self.relative_attention_bias[...].astype(jnp.float32)
        return jnp.transpose(table[buckets], (2, 0, 1))[None]

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        chex.assert_rank(ids, 2)
        chex.assert_equal_shape([ids, mask])
        x = self.embedding(ids).astype(self.config.compute_dtype)
        bias = self.position_bias(ids.shape[1])
        attn_mask = mask.astype(bool)[:, None, None, :]  # [B, 1, 1, L]
        x = layers.run_stacked(self.layers, x, lambda layer, h: layer(h, attn_mask, bias))
        return self.final_norm(x)
