"""CLIP text transformer (causal, pre-LN) in Flax NNX — STIV's prompt encoder (paper §3.1, App. C).

STIV encodes T5-tokenized prompts with an internal "CLIP-bigG-class" causal text encoder: 32
layers, 20 heads × 64, width 1280. The token states (after the final LayerNorm) feed the DiT's
cross-attention; the *pooled* embedding — the state at the last real token — feeds the
singleton condition (§2.1). Layout and numerics follow Hugging Face ``CLIPTextModel`` /
``CLIPTextModelWithProjection``, so their weights convert 1:1 (stiv_jax/text/convert.py).

Pooling (``CLIPTextConfig.pooling``):
- ``"last"``: the last position where ``mask`` is True (STIV's rule; tokenizer-agnostic);
- ``"eos"``: the first position holding ``eos_token_id`` (Hugging Face, current configs);
- ``"argmax"``: the position of the largest token id (Hugging Face, configs with
  ``eos_token_id == 2``, i.e. OpenAI's EOT being the largest id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.text import layers
from stiv_jax.weights.config import PretrainedConfig

POOLINGS = ("last", "eos", "argmax")


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig(PretrainedConfig):
    vocab_size: int = 49408
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_length: int = 77  # number of learned positions
    activation: str = "quick_gelu"  # gelu | gelu_tanh | quick_gelu | relu
    layer_norm_eps: float = 1e-5
    projection_dim: int | None = None  # text_projection of CLIPTextModelWithProjection
    pooling: str = "eos"
    eos_token_id: int = 49407
    dtype: str = "float32"
    param_dtype: str = "float32"

    HF_MARKERS = ("hidden_size", "text_config")
    PRESETS = {
        # OpenAI CLIP ViT-L/14 text tower (SD 1.x); its HF config has the legacy eos_token_id=2.
        "clip-L": dict(width=768, num_layers=12, num_heads=12, mlp_dim=3072, projection_dim=768, pooling="argmax"),
        # OpenCLIP ViT-bigG/14 text tower (SDXL text_encoder_2): 694,659,840 parameters.
        "clip-bigG": dict(
            width=1280, num_layers=32, num_heads=20, mlp_dim=5120, activation="gelu", projection_dim=1280
        ),
        # STIV's encoder: bigG shapes on the T5 vocabulary (EOS=1, pad=0), 128 tokens, last-token pooling.
        "stiv-bigG": dict(
            vocab_size=32128,
            width=1280,
            num_layers=32,
            num_heads=20,
            mlp_dim=5120,
            max_length=128,
            activation="gelu",
            pooling="last",
            eos_token_id=1,
        ),
    }

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.activation not in layers.ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {sorted(layers.ACTIVATIONS)}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> CLIPTextConfig:
        """From a ``CLIPTextConfig`` dict, or a full ``CLIPConfig`` (its ``text_config``)."""
        text = hf.get("text_config", hf)
        arch = hf.get("architectures") or ()
        with_projection = any(a in ("CLIPTextModelWithProjection", "CLIPModel") for a in arch)
        eos = int(text.get("eos_token_id", 2))
        return cls(
            vocab_size=text.get("vocab_size", 49408),
            width=text["hidden_size"],
            num_layers=text.get("num_hidden_layers", 12),
            num_heads=text.get("num_attention_heads", 8),
            mlp_dim=text.get("intermediate_size", 2048),
            max_length=text.get("max_position_embeddings", 77),
            activation=layers.hf_activation(text.get("hidden_act", "quick_gelu")),
            layer_norm_eps=text.get("layer_norm_eps", 1e-5),
            projection_dim=(hf.get("projection_dim") or text.get("projection_dim")) if with_projection else None,
            # stiv_pooling / stiv_eos_token_id: written by text/convert.py's clip_hf_config
            pooling=text.get("stiv_pooling") or ("argmax" if eos == 2 else "eos"),
            eos_token_id=int(text.get("stiv_eos_token_id", eos)),
        )

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


class CLIPTextOutput(NamedTuple):
    hidden: jax.Array  # [B, L, width] after the final LayerNorm
    pooled: jax.Array  # [B, width] at the pooling position
    projected: jax.Array | None  # [B, projection_dim] = text_projection(pooled), if configured


class CLIPLayer(nnx.Module):
    """Pre-LN block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, cfg: CLIPTextConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype)
        self.ln1 = layers.layer_norm(cfg.width, cfg.layer_norm_eps, rngs=rngs, param_dtype=cfg.params_dtype)
        self.attn = layers.SelfAttention(cfg.width, cfg.num_heads, cfg.head_dim, rngs=rngs, use_bias=True, **kw)
        self.ln2 = layers.layer_norm(cfg.width, cfg.layer_norm_eps, rngs=rngs, param_dtype=cfg.params_dtype)
        self.fc1 = layers.dense(cfg.width, cfg.mlp_dim, ("embed", "mlp"), rngs=rngs, **kw)
        self.fc2 = layers.dense(cfg.mlp_dim, cfg.width, ("mlp", "embed"), rngs=rngs, **kw)
        self.activation = cfg.activation

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x), mask=mask).astype(x.dtype)
        h = layers.ACTIVATIONS[self.activation](self.fc1(self.ln2(x)))
        return x + self.fc2(h).astype(x.dtype)


class CLIPTextModel(nnx.Module):
    """``(ids [B, L] int, mask [B, L] bool) -> CLIPTextOutput``; causal self-attention."""

    def __init__(self, cfg: CLIPTextConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.token_embedding = layers.embedding(
            cfg.vocab_size, cfg.width, ("vocab", "embed"), rngs=rngs, param_dtype=cfg.params_dtype
        )
        self.position_embedding = layers.embedding(
            cfg.max_length, cfg.width, (None, "embed"), rngs=rngs, param_dtype=cfg.params_dtype
        )
        self.layers = layers.stacked(lambda r: CLIPLayer(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = layers.layer_norm(cfg.width, cfg.layer_norm_eps, rngs=rngs, param_dtype=cfg.params_dtype)
        if cfg.projection_dim:
            self.text_projection = layers.dense(
                cfg.width, cfg.projection_dim, ("embed", None), rngs=rngs, use_bias=False, param_dtype=cfg.params_dtype
            )

    def pool_index(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """``[B]`` position whose state is the pooled embedding (see module docstring)."""
        cfg = self.config
        if cfg.pooling == "last":
            return jnp.maximum(jnp.sum(mask, axis=-1) - 1, 0)
        if cfg.pooling == "eos":
            return jnp.argmax(ids == cfg.eos_token_id, axis=-1)
        return jnp.argmax(ids, axis=-1)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> CLIPTextOutput:
        cfg = self.config
        chex.assert_rank(ids, 2)
        chex.assert_equal_shape([ids, mask])
        length = ids.shape[1]
        if length > cfg.max_length:
            raise ValueError(f"sequence length {length} exceeds CLIP max_length {cfg.max_length}")
        mask = mask.astype(bool)
        x = self.token_embedding(ids) + self.position_embedding.embedding[:length]
        x = x.astype(cfg.compute_dtype)
        causal = jnp.tril(jnp.ones((length, length), bool))
        attn_mask = causal[None, None] & mask[:, None, None, :]  # [B, 1, L, L]
        x = layers.run_stacked(self.layers, x, lambda layer, h: layer(h, attn_mask))
        hidden = self.final_norm(x)
        pooled = jnp.take_along_axis(hidden, self.pool_index(ids, mask)[:, None, None], axis=1)[:, 0]
        projected = self.text_projection(pooled) if cfg.projection_dim else None
        return CLIPTextOutput(hidden, pooled, projected)
