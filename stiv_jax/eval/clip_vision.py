"""CLIP vision transformer (ViT) in Flax NNX, its Hugging Face converter and CLIP's image preprocessing.

Layout and numerics follow Hugging Face ``CLIPVisionModelWithProjection`` (Radford et al. 2021,
"Learning Transferable Visual Models From Natural Language Supervision"; transformers
``models/clip/modeling_clip.py``): a bias-free patch convolution, a learned class token and learned
positions, a pre-LayerNorm (HF's ``pre_layrnorm``), pre-LN transformer layers (the text tower's
:class:`stiv_jax.text.clip.CLIPLayer`, unmasked), a post-LayerNorm on the class token and a bias-free
``visual_projection``. Weights convert 1:1 from ``CLIPVisionModelWithProjection`` and full
``CLIPModel`` state dicts (:func:`convert_clip_vision`). Inputs are NHWC (torch: NCHW).

Preprocessing (:func:`preprocess`) is CLIP's — shorter side resized to ``image_size`` (bicubic), centre
crop, ``/255``, normalised with CLIP's mean/std — computed with ``jax.image.resize(method="bicubic",
antialias=True)`` (Keys cubic, a = −0.5, antialiased when downsampling) and rounded to uint8 levels as
PIL does. PIL's bicubic (used by the HF ``CLIPImageProcessor`` and OpenAI's ``clip.load``) rounds its
intermediate horizontal pass to uint8 as well and places its kernel support slightly differently, so
pixels may differ by a few levels from PIL's output; embeddings differ correspondingly little.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.text import layers
from stiv_jax.text.clip import CLIPLayer, CLIPTextConfig
from stiv_jax.text.convert import clip_rules
from stiv_jax.weights.config import PretrainedConfig
from stiv_jax.weights.torch_state import Rule, conv2d, convert, linear, load_state_dict

# OpenAI CLIP's normalisation (clip/clip.py ``_transform``; HF ``OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(PretrainedConfig):
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "quick_gelu"  # gelu | gelu_tanh | quick_gelu | relu
    layer_norm_eps: float = 1e-5
    projection_dim: int | None = 512  # visual_projection; None for a bare CLIPVisionModel
    dtype: str = "float32"
    param_dtype: str = "float32"

    HF_MARKERS = ("hidden_size", "vision_config")
    PRESETS = {
        # OpenAI CLIP (transformers openai/clip-vit-*): all quick_gelu.
        "clip-B/32": dict(patch_size=32),
        "clip-B/16": dict(patch_size=16),
        "clip-L/14": dict(patch_size=14, width=1024, num_layers=24, num_heads=16, mlp_dim=4096, projection_dim=768),
        "clip-L/14-336": dict(
            image_size=336, patch_size=14, width=1024, num_layers=24, num_heads=16, mlp_dim=4096, projection_dim=768
        ),
    }

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        _ = self.layer_config  # validates width / heads / activation

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> CLIPVisionConfig:
        """From a ``CLIPVisionConfig`` dict, or a full ``CLIPConfig`` (its ``vision_config``).

        The projection is kept unless ``architectures`` names a bare ``CLIPVisionModel``."""
        vision = hf.get("vision_config", hf)
        arch = hf.get("architectures") or ()
        bare = bool(arch) and all(a == "CLIPVisionModel" for a in arch)
        return cls(
            image_size=vision.get("image_size", 224),
            patch_size=vision.get("patch_size", 32),
            width=vision["hidden_size"],
            num_layers=vision.get("num_hidden_layers", 12),
            num_heads=vision.get("num_attention_heads", 12),
            mlp_dim=vision.get("intermediate_size", 3072),
            activation=layers.hf_activation(vision.get("hidden_act", "quick_gelu")),
            layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
            projection_dim=None if bare else (hf.get("projection_dim") or vision.get("projection_dim", 512)),
        )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def layer_config(self) -> CLIPTextConfig:
        """The fields of one transformer layer, as the text tower's config (its layers are reused)."""
        return CLIPTextConfig(
            width=self.width,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            activation=self.activation,
            layer_norm_eps=self.layer_norm_eps,
            projection_dim=None,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )


class CLIPVisionOutput(NamedTuple):
    hidden: jax.Array  # [B, 1 + patches, width], last layer, before the post-LayerNorm (HF last_hidden_state)
    pooled: jax.Array  # [B, width] = post_layernorm(class token) (HF pooler_output)
    projected: jax.Array | None  # [B, projection_dim] = visual_projection(pooled) (HF image_embeds)


class CLIPVisionModel(nnx.Module):
    """``pixels [B, S, S, 3] float (normalised, see :func:`preprocess`) -> CLIPVisionOutput``."""

    def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        lcfg, pd = cfg.layer_config, cfg.params_dtype
        p = cfg.patch_size
        self.patch_embedding = nnx.Conv(
            3,
            cfg.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            dtype=cfg.compute_dtype,
            param_dtype=pd,
            kernel_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (cfg.width,), pd) * 0.02)
        self.position_embedding = nnx.Param(
            jax.random.normal(rngs.params(), (cfg.num_patches + 1, cfg.width), pd) * 0.02
        )
        self.pre_norm = layers.layer_norm(cfg.width, cfg.layer_norm_eps, rngs=rngs, param_dtype=pd)
        self.layers = layers.stacked(lambda r: CLIPLayer(lcfg, rngs=r), cfg.num_layers, rngs)
        self.post_norm = layers.layer_norm(cfg.width, cfg.layer_norm_eps, rngs=rngs, param_dtype=pd)
        if cfg.projection_dim:
            self.visual_projection = layers.dense(
                cfg.width, cfg.projection_dim, ("embed", None), rngs=rngs, use_bias=False, param_dtype=pd
            )

    def __call__(self, pixels: jax.Array) -> CLIPVisionOutput:
        cfg = self.config
        chex.assert_shape(pixels, (None, cfg.image_size, cfg.image_size, 3))
        x = self.patch_embedding(pixels.astype(cfg.compute_dtype))  # [B, g, g, width], row-major like torch
        b = x.shape[0]
        x = x.reshape(b, -1, cfg.width)
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, cfg.width))
        x = jnp.concatenate([cls, x], axis=1) + self.position_embedding[...].astype(x.dtype)
        x = self.pre_norm(x).astype(cfg.compute_dtype)
        hidden = layers.run_stacked(self.layers, x, lambda layer, h: layer(h, None))
        pooled = self.post_norm(hidden[:, 0])
        projected = self.visual_projection(pooled) if cfg.projection_dim else None
        return CLIPVisionOutput(hidden, pooled, projected)


# --------------------------------------------------------------------------------------------
# Conversion from Hugging Face state dicts.


def clip_vision_rules(cfg: CLIPVisionConfig) -> list[Rule]:
    """Our parameter ← HF key (without the ``vision_model.`` prefix); layers as in the text tower."""
    rules = [
        Rule.one("patch_embedding.kernel", "embeddings.patch_embedding.weight", conv2d),
        Rule.one("class_embedding", "embeddings.class_embedding"),
        Rule.one("position_embedding", "embeddings.position_embedding.weight"),
        Rule.one("pre_norm.scale", "pre_layrnorm.weight"),  # sic: HF's spelling
        Rule.one("pre_norm.bias", "pre_layrnorm.bias"),
        Rule.one("post_norm.scale", "post_layernorm.weight"),
        Rule.one("post_norm.bias", "post_layernorm.bias"),
    ]
    rules += [r for r in clip_rules(cfg.layer_config) if r.target.startswith("layers.")]
    if cfg.projection_dim:
        rules.append(Rule.one("visual_projection.kernel", "visual_projection.weight", linear))
    return rules


def convert_clip_vision(state_dict: Mapping[str, np.ndarray], cfg: CLIPVisionConfig) -> CLIPVisionModel:
    """HF ``CLIPVisionModelWithProjection`` / ``CLIPModel`` (text tower, ``logit_scale`` ignored) /
    bare ``CLIPVisionModel`` (``projection_dim=None``) state dict → :class:`CLIPVisionModel`.
    Raises one :class:`~stiv_jax.weights.torch_state.ConversionError` naming every bad key."""
    prefix = "vision_model."
    sd = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    abstract = nnx.eval_shape(lambda: CLIPVisionModel(cfg, rngs=nnx.Rngs(0)))
    ignore = (r"^text_model\.", r"^text_projection\.", r"^logit_scale$", r"position_ids$")
    return convert(sd, abstract, clip_vision_rules(cfg), ignore=ignore, what="CLIPVisionModel")


def load_clip_vision(path: str, config: str | Mapping[str, Any] | CLIPVisionConfig | None = None) -> CLIPVisionModel:
    """A Hugging Face directory (``config.json`` + ``*.safetensors`` / ``*.bin``, of a
    ``CLIPVisionModelWithProjection`` or a full ``CLIPModel``) or one weight file → :class:`CLIPVisionModel`.

    ``config`` (preset name, JSON path, dict or config) is needed for a bare weight file; by default
    it is the ``config.json`` beside the weights."""
    if config is None:
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        config_path = os.path.join(directory, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"no config.json beside {path}: pass config= (e.g. 'clip-L/14')")
        with open(config_path) as f:
            config = json.load(f)
    return convert_clip_vision(load_state_dict(path), CLIPVisionConfig.resolve(config))


# --------------------------------------------------------------------------------------------
# Preprocessing.


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side → ``size``, longer side → ``int(size · long / short)`` (HF / torchvision rule)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def preprocess(frames: jax.Array, image_size: int) -> jax.Array:
    """CLIP's preprocessing, ``uint8 [N, H, W, 3] -> float32 [N, S, S, 3]`` (``S = image_size``).

    Resize the shorter side to ``S`` (``jax.image.resize`` bicubic, antialiased; see the module
    docstring for how it differs from PIL), round and clip to [0, 255], centre crop (top-left offset
    ``(H' − S) // 2``, as HF's ``center_crop``), scale to [0, 1], normalise with
    :data:`CLIP_MEAN` / :data:`CLIP_STD`.
    """
    chex.assert_rank(frames, 4)
    chex.assert_axis_dimension(frames, 3, 3)
    n, h, w, _ = frames.shape
    rh, rw = resized_shape(h, w, image_size)
    x = frames.astype(jnp.float32)
    if (rh, rw) != (h, w):
        x = jax.image.resize(x, (n, rh, rw, 3), method="bicubic", antialias=True)
        x = jnp.clip(jnp.round(x), 0.0, 255.0)
    top, left = (rh - image_size) // 2, (rw - image_size) // 2
    x = x[:, top : top + image_size, left : left + image_size] / 255.0
    return (x - jnp.asarray(CLIP_MEAN, jnp.float32)) / jnp.asarray(CLIP_STD, jnp.float32)
