"""diffusers ``AutoencoderKL`` state dict → our Flax NNX AutoencoderKL (stiv_jax/vae/autoencoder_kl.py).

Our module tree mirrors diffusers', so each rule is derived from our parameter path by a short
rename table; key matching and error reporting are stiv_jax/weights/torch_state.py's. Files written by
older diffusers (attention as ``query``/``key``/``value``/``proj_attn``, 1×1-conv shaped) load too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.weights.torch_state import Rule, conv2d, convert, identity, linear, param_shapes

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
