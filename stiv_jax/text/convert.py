"""Hugging Face ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` / ``T5EncoderModel`` state dicts
↔ our Flax NNX text encoders (stiv_jax/text/clip.py, stiv_jax/text/t5.py).

Key matching and error reporting live in stiv_jax/weights/torch_state.py; this module only lists, per
parameter, where it comes from. Per-block weights are stacked on the ``layers`` axis. The same rules
run backwards in :func:`clip_to_hf` / :func:`t5_to_hf` (our model → transformers config + state dict).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import nnx

from stiv_jax.text.clip import CLIPTextConfig, CLIPTextModel
from stiv_jax.text.layers import HF_ACTIVATIONS
from stiv_jax.text.t5 import T5Encoder, T5EncoderConfig
from stiv_jax.weights.torch_state import Rule, convert, flat_params, identity, invert_rules, linear

# Our activation → its first Hugging Face name in HF_ACTIVATIONS (gelu_tanh → "gelu_new").
_HF_NAME: dict[str, str] = {}
for _hf, _ours in HF_ACTIVATIONS.items():
    _HF_NAME.setdefault(_ours, _hf)


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


# --------------------------------------------------------------------------------------------
# Our modules → transformers (config dict, state dict).


def clip_hf_config(cfg: CLIPTextConfig) -> dict:
    """``transformers.CLIPTextConfig`` kwargs that :meth:`CLIPTextConfig.from_hf` reads back to ``cfg``.

    transformers pools at the largest id exactly when ``eos_token_id == 2``, so ``"argmax"``
    writes 2 there (our id goes to ``stiv_eos_token_id``). ``stiv_pooling`` keeps our rule;
    transformers ignores it, so ``"last"`` (and ``"eos"`` with id 2) pool differently there.
    """
    eos = 2 if cfg.pooling == "argmax" else cfg.eos_token_id
    hf = dict(
        architectures=["CLIPTextModelWithProjection" if cfg.projection_dim else "CLIPTextModel"],
        model_type="clip_text_model",
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        hidden_act=_HF_NAME[cfg.activation],
        layer_norm_eps=cfg.layer_norm_eps,
        attention_dropout=0.0,
        eos_token_id=eos,
        stiv_pooling=cfg.pooling,
    )
    if eos != cfg.eos_token_id:
        hf["stiv_eos_token_id"] = cfg.eos_token_id
    if cfg.projection_dim:
        hf["projection_dim"] = cfg.projection_dim
    return hf


def clip_to_hf(model: CLIPTextModel) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config kwargs, state dict)`` for ``CLIPTextModelWithProjection`` (``projection_dim`` set)
    or ``CLIPTextModel``, loadable with ``load_state_dict(strict=True)``.

    Keys follow transformers 5: ``CLIPTextModel`` is the bare transformer (no prefix), the
    projection model nests it under ``text_model.``. The non-persistent ``position_ids`` buffer is
    not in either state dict; the model builds it.
    """
    cfg = model.config
    sd = invert_rules(flat_params(model), clip_rules(cfg), what="CLIPTextModel")
    if cfg.projection_dim:
        sd = {k if k.startswith("text_projection.") else f"text_model.{k}": v for k, v in sd.items()}
    return clip_hf_config(cfg), sd


def t5_hf_config(cfg: T5EncoderConfig) -> dict:
    """``transformers.T5Config`` kwargs for an encoder-only model (``feed_forward_proj`` is
    ``"gated-gelu"`` for v1.1's gated tanh-GELU, else ``[gated-]<HF activation name>``)."""
    ff = _HF_NAME[cfg.activation]
    if cfg.gated and ff == "gelu_new":
        ff = "gated-gelu"  # v1.1's name; transformers reads it as gelu_new
    elif cfg.gated:  # exact GELU needs "gelu_python" here, as "gated-gelu" means the tanh form
        ff = "gated-" + ("gelu_python" if ff == "gelu" else ff)
    return dict(
        architectures=["T5EncoderModel"],
        model_type="t5",
        vocab_size=cfg.vocab_size,
        d_model=cfg.width,
        d_kv=cfg.head_dim,
        d_ff=cfg.mlp_dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        feed_forward_proj=ff,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        layer_norm_epsilon=cfg.layer_norm_eps,
        is_encoder_decoder=False,
        use_cache=False,
    )


def t5_to_hf(model: T5Encoder) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config kwargs, state dict)`` for ``T5EncoderModel``; the state dict carries the tied
    ``encoder.embed_tokens.weight`` next to ``shared.weight`` (both are in its state dict)."""
    sd = invert_rules(flat_params(model), t5_rules(model.config), what="T5EncoderModel")
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    return t5_hf_config(model.config), sd
