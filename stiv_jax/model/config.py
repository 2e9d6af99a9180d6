"""STIV model configurations (paper Table 1, plus CPU-sized ``tiny``/``small``).

| size | blocks | width | heads | head dim |
|------|--------|-------|-------|----------|
| XL   | 28     | 1152  | 18    | 64       |
| XXL  | 38     | 1536  | 24    | 64       |
| M    | 46     | 3072  | 48    | 64       |

MLP ratio 4 with GELU(tanh) (PixArt-α; the paper does not state it), spatial patch 2, temporal
patch 2 (App. B). Text comes from a 1280-d CLIP-bigG-class encoder (App. C).

Parameter-count convention (tests/test_param_counts.py): the paper's counts are not mutually
consistent (docs/design.md). 0.6B and 1.5B match the *image* model (no temporal attention, the T2I
ablation setting in which Table 1's XL/XXL are introduced) while 8.7B matches the *video* model
(temporal attention included). We therefore compare XL/XXL with ``temporal_attention=False`` and
M with it on; all counts include the 2 MaskDiT decoder blocks, embedders and final layer.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from stiv_jax.model.micro import MICRO_FIELDS

SIZES = {
    # name: (num_layers, hidden_size, num_heads)
    "tiny": (2, 64, 2),
    "small": (4, 128, 4),
    "XL": (28, 1152, 18),
    "XXL": (38, 1536, 24),
    "M": (46, 3072, 48),
}

REMAT_POLICIES = ("none", "save_self_attn", "full", "dots")
ATTENTION_IMPLS = ("xla", "cudnn", "splash")
# 'factorised': spatial attention within frames + temporal attention across them (the paper);
# 'joint': one full 3D attention over all frames' tokens (3D RoPE), the ablation the scaling
# benchmark compares against (needs ``temporal_attention=False``).
ATTENTION_LAYOUTS = ("factorised", "joint")
POS_EMBEDS = ("none", "sincos")  # 'sincos' adds stiv_jax/model/posembed.py's table to RoPE (the CPU demo)
# What the output layer predicts: 'v' the velocity (the paper, §2.1) | 'x' the clean latents,
# turned into the velocity by stiv_jax/flow/interpolant.py (x-prediction; the CPU demo).
PREDICTIONS = ("v", "x")
# Every option-valued key and its choices, checked by validate() (one source for the PyTorch
# twin's contract test, tests/test_torch_twin_contract.py).
CHOICES = {"remat_policy": REMAT_POLICIES, "attention_impl": ATTENTION_IMPLS, "attention_layout": ATTENTION_LAYOUTS,
           "pos_embed": POS_EMBEDS, "prediction": PREDICTIONS}  # fmt: skip


def get_model_config(size: str = "XL", **overrides) -> ml_collections.ConfigDict:
    """Returns the locked model config for ``size``; ``overrides`` replace individual keys.

    ``num_layers``/``hidden_size``/``num_heads`` stay unset (``None``) unless overridden, and are
    filled from ``SIZES[size]`` by :func:`resolve`, so ``--config.model.size=...`` works.
    """
    c = _defaults(size)
    c.update(overrides)
    resolve(c)  # fail fast on bad values and unknown keys
    c.lock()
    return c


def _defaults(size: str) -> ml_collections.ConfigDict:
    _check_size(size)
    cpu = size in ("tiny", "small")
    c = ml_collections.ConfigDict()
    c.size = size
    c.num_layers = config_dict.placeholder(int)
    c.hidden_size = config_dict.placeholder(int)
    c.num_heads = config_dict.placeholder(int)
    c.mlp_ratio = 4.0
    c.in_channels = 4  # latent channels (sd-vae-ft-ema: 4)
    c.patch_size = 2  # spatial
    c.temporal_patch_size = 2
    c.text_dim = 64 if cpu else 1280  # CLIP-bigG width (App. C)
    c.freq_dim = 256  # sinusoid width for timestep and micro-conditions
    c.num_micro_conditions = len(MICRO_FIELDS)  # micro.MICRO_FIELDS
    c.temporal_attention = True
    c.attention_layout = "factorised"
    c.cond_indicator = True  # learned per-frame indicator of replaced frames
    c.rope_theta = 10000.0
    c.pos_embed = "none"  # the paper: RoPE only (§2.1)
    c.prediction = "v"  # the paper: velocity (§2.1); 'x': clean latents (PREDICTIONS)
    # Token grid (temporal, height, width) the RoPE positions were trained on; larger grids are
    # interpolated into this range (§2.4). Default: 20 frames × 256² through a ×8 VAE and patch 2.
    c.rope_ref_grid = (10, 16, 16)
    c.num_decoder_blocks = 2  # MaskDiT: full-width blocks after unmasking (0 disables MaskDiT)
    c.ln_eps = 1e-6
    c.dtype = "float32" if cpu else "bfloat16"  # compute dtype
    c.param_dtype = "float32"
    c.remat_policy = "save_self_attn"
    c.scan_layers = True
    c.attention_impl = "xla"
    return c


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")


def resolve(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A locked copy of ``c`` with the size-derived fields filled in and every value validated.

    Keys a config lacks take their defaults (``config.json`` of runs older than the key); a key
    the model does not know is an error (a typo would otherwise be silently ignored)."""
    _check_size(c.size)
    defaults = _defaults(c.size)
    unknown = sorted(set(c.keys()) - set(defaults.keys()))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; the model has {sorted(defaults.keys())}")
    defaults.update(c.to_dict())
    c = defaults
    for key, value in zip(("num_layers", "hidden_size", "num_heads"), SIZES[c.size]):
        if c[key] is None:
            c[key] = value
    validate(c)
    c.lock()
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    if c.hidden_size % c.num_heads:
        raise ValueError(f"hidden_size={c.hidden_size} not divisible by num_heads={c.num_heads}")
    if (c.hidden_size // c.num_heads) % 4:
        raise ValueError("head_dim must be a multiple of 4 for 2D RoPE")
    for key, choices in CHOICES.items():
        if c[key] not in choices:
            raise ValueError(f"model.{key}={c[key]!r}; choose one of {choices}")
    if c.attention_layout == "joint" and c.temporal_attention:
        raise ValueError(
            "model.attention_layout='joint' attends across frames already: set model.temporal_attention=False"
        )
    if len(tuple(c.rope_ref_grid)) != 3:
        raise ValueError("model.rope_ref_grid must be (temporal, height, width) in tokens")
