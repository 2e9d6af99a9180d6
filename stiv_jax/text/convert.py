"""Hugging Face ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` / ``T5EncoderModel`` state dicts
→ our Flax NNX text encoders (stiv_jax/text/clip.py, stiv_jax/text/t5.py).

Key matching and error reporting live in stiv_jax/weights/torch_state.py; this module only lists, per
parameter, where it comes from. Per-block weights are stacked on the ``layers`` axis.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import nnx

from stiv_jax.text.clip import CLIPTextConfig, CLIPTextModel
from stiv_jax.text.t5 import T5Encoder, T5EncoderConfig
from stiv_jax.weights.torch_state import Rule, convert, identity, linear


def _stack(target: str, template: str, n: int, transform=identity) -> Rule:
    return Rule.stack(target, [template.format(i=i) for i in range(n)], transform)


def _linear_rules(target: str, template: str, n: int, bias: bool) -> list[Rule]:
    rules = [_stack(f"{target}.kernel", f"{template}.weight", n, linear)]
    return rules + ([_stack(f"{target}.bias", f"{template}.bias", n)] if bias else [])


def clip_rules(cfg: CLIPTextConfig) -> list[Rule]:
    n, layer = cfg.num_layers, "encoder.layers.{i}"
    rules = [
        Rule.one("token_embedding.embedding", "embeddings.token_embedding.weight"),
        Rule.one("position_embedding.embedding", "embeddings.position_embedding.weight"),
        Rule.one("final_norm.scale", "final_layer_norm.weight"),
        Rule.one("final_norm.bias", "final_layer_norm.bias"),
    ]
    for ours, theirs in (("ln1", "layer_norm1"), ("ln2", "layer_norm2")):
        rules += [_stack(f"layers.{ours}.scale", f"{layer}.{theirs}.weight", n)]
        rules += [_stack(f"layers.{ours}.bias", f"{layer}.{theirs}.bias", n)]
    for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "out_proj")):
        rules += _linear_rules(f"layers.attn.{ours}", f"{layer}.self_attn.{theirs}", n, bias=True)
    rules += _linear_rules("layers.fc1", f"{layer}.mlp.fc1", n, bias=True)
    rules += _linear_rules("layers.fc2", f"{layer}.mlp.fc2", n, bias=True)
    if cfg.projection_dim:
        rules.append(Rule.one("text_projection.kernel", "text_projection.weight", linear))
    return rules


def _strip_prefix(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}


def convert_clip(state_dict: Mapping[str, np.ndarray], cfg: CLIPTextConfig) -> CLIPTextModel:
    """Accepts ``CLIPTextModel`` keys with or without the ``text_model.`` prefix, and full
    ``CLIPModel`` files (the vision tower, ``logit_scale`` and buffers are ignored)."""
    sd = _strip_prefix(state_dict, "text_model.")
    abstract = nnx.eval_shape(lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(0)))
    ignore = (r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$", r"position_ids$")
    return convert(sd, abstract, clip_rules(cfg), ignore=ignore, what="CLIPTextModel")


def t5_rules(cfg: T5EncoderConfig) -> list[Rule]:
    n, block = cfg.num_layers, "encoder.block.{i}.layer"
    rules = [
        Rule.one("embedding.embedding", "shared.weight"),
        Rule.one("relative_attention_bias", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Rule.one("final_norm.scale", "encoder.final_layer_norm.weight"),
        _stack("layers.attn_norm.scale", f"{block}.0.layer_norm.weight", n),
        _stack("layers.ff_norm.scale", f"{block}.1.layer_norm.weight", n),
    ]
    for name in ("q", "k", "v"):
        rules += _linear_rules(f"layers.attn.{name}", f"{block}.0.SelfAttention.{name}", n, bias=False)
    rules += _linear_rules("layers.attn.out", f"{block}.0.SelfAttention.o", n, bias=False)
    ff = f"{block}.1.DenseReluDense"
    if cfg.gated:
        rules += _linear_rules("layers.wi_0", f"{ff}.wi_0", n, bias=False)
        rules += _linear_rules("layers.wi_1", f"{ff}.wi_1", n, bias=False)
    else:
        rules += _linear_rules("layers.wi_0", f"{ff}.wi", n, bias=False)
    rules += _linear_rules("layers.wo", f"{ff}.wo", n, bias=False)
    return rules


def convert_t5(state_dict: Mapping[str, np.ndarray], cfg: T5EncoderConfig) -> T5Encoder:
    """Accepts ``T5EncoderModel`` and full ``T5ForConditionalGeneration`` files (the decoder and
    LM head are ignored). The embedding is read from ``shared.weight`` or, when a file stores
    only the tied copy, ``encoder.embed_tokens.weight``."""
    sd = dict(state_dict)
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd.pop("encoder.embed_tokens.weight")
    abstract = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))
    ignore = (r"^decoder\.", r"^lm_head\.", r"^encoder\.embed_tokens\.weight$")
    return convert(sd, abstract, t5_rules(cfg), ignore=ignore, what="T5EncoderModel")
