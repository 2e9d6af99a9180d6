"""diffusers ``AutoencoderKL`` state dict ↔ our Flax NNX AutoencoderKL (stiv_jax/vae/autoencoder_kl.py).

Our module tree mirrors diffusers', so each rule is derived from our parameter path by a short
rename table; key matching and error reporting are stiv_jax/weights/torch_state.py's. Files written by
older diffusers (attention as ``query``/``key``/``value``/``proj_attn``, 1×1-conv shaped) load too.
:func:`vae_to_diffusers` runs the same rules backwards and writes the current layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.weights.torch_state import (
    Rule,
    conv2d,
    convert,
    flat_params,
    identity,
    inverse_of,
    invert_rules,
    linear,
    param_shapes,
)

# (our path pattern, diffusers replacement), applied in order to dotted paths.
_RENAMES = (
    (r"\.mid\.", ".mid_block."),
    (r"\.norm_out\.", ".conv_norm_out."),
    (r"\.shortcut\.", ".conv_shortcut."),
    (r"(down_blocks\.\d+)\.conv\.", r"\1.downsamplers.0.conv."),
    (r"(up_blocks\.\d+)\.conv\.", r"\1.upsamplers.0.conv."),
    (r"\.attention\.norm\.", ".attentions.0.group_norm."),
    (r"\.attention\.(q|k|v)\.", r".attentions.0.to_\1."),
    (r"\.attention\.out\.", ".attentions.0.to_out.0."),
    (r"\.(kernel|scale)$", ".weight"),
)
# Pre-0.14 diffusers attention names → current ones.
_LEGACY = (("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0"))


def _linear_as_conv1x1(w: np.ndarray) -> np.ndarray:
    return linear(w)[None, None]


@inverse_of(_linear_as_conv1x1)
def _conv1x1_as_linear(w: np.ndarray) -> np.ndarray:
    """Our 1×1 conv kernel ``(1, 1, in, out)`` → diffusers' ``nn.Linear.weight (out, in)``."""
    return w[0, 0].T


def torch_key(path: str) -> str:
    for pattern, repl in _RENAMES:
        path = re.sub(pattern, repl, path)
    return path


def vae_rules(abstract: AutoencoderKL) -> list[Rule]:
    rules = []
    for path in param_shapes(abstract):
        if path.endswith(".kernel"):
            transform = _linear_as_conv1x1 if ".attention." in path else conv2d
        else:
            transform = identity
        rules.append(Rule.one(path, torch_key(path), transform))
    return rules


def _upgrade_legacy_names(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in sd.items():
        for old, new in _LEGACY:
            key = re.sub(rf"(attentions\.\d+)\.{old}\.", rf"\1.{new}.", key)
        out[key] = value
    return out


def convert_vae(state_dict: Mapping[str, np.ndarray], cfg: AutoencoderKLConfig) -> AutoencoderKL:
    abstract = nnx.eval_shape(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    sd = _upgrade_legacy_names(state_dict)
    return convert(sd, abstract, vae_rules(abstract), what="AutoencoderKL")


def vae_diffusers_config(cfg: AutoencoderKLConfig) -> dict:
    """``diffusers.AutoencoderKL`` kwargs (``_class_name`` is dropped by its ``__init__``) that
    :meth:`AutoencoderKLConfig.from_hf` reads back to ``cfg``; a zero shift is written as None."""
    n = len(cfg.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "act_fn": "silu",
        "latent_channels": cfg.latent_channels,
        "norm_num_groups": cfg.norm_num_groups,
        "sample_size": 32,  # diffusers' default; only sizes its tiles
        "scaling_factor": cfg.scaling_factor,
        "shift_factor": cfg.shift_factor or None,
        "latents_mean": None,
        "latents_std": None,
        "use_quant_conv": cfg.use_quant_conv,
        "use_post_quant_conv": cfg.use_post_quant_conv,
        "mid_block_add_attention": cfg.mid_block_add_attention,
    }


def vae_to_diffusers(model: AutoencoderKL) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config kwargs, state dict)`` for ``diffusers.AutoencoderKL(**config)``, loadable with
    ``load_state_dict(strict=True)``; attention as ``to_q/to_k/to_v/to_out.0`` Linear weights."""
    sd = invert_rules(flat_params(model), vae_rules(model), what="AutoencoderKL")
    return vae_diffusers_config(model.config), sd
