"""The one place frozen encoders are built from a config section (paper §3.1).

The trainer, the sampler and ``stiv-encode-shards`` all call :func:`build_text_encoder` and
:func:`build_autoencoder` with a ``config.text`` / ``config.autoencoder`` section (a dict,
``ml_collections.ConfigDict`` or object), so a prompt or a frame is encoded the same way
everywhere. Command lines name an encoder with a short spec (:func:`from_spec`).

Text (``kind``): ``cached`` (no encoder: batches carry embeddings), ``embedding`` (frozen random
table, toy runs), ``clip`` / ``t5`` (from ``checkpoint``, a ``stiv-import`` directory, or randomly
initialised from the preset in ``model``: toy runs and AOT only). Autoencoder (``kind``): ``pixel``
(space-to-depth by ``downsample``) or ``kl`` (``checkpoint`` or ``model`` as above).
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
from flax import nnx

from stiv_jax.encoders.pretrained import load_pretrained, random_init
from stiv_jax.errors import ConfigError
from stiv_jax.storage import paths
from stiv_jax.text.clip import CLIPTextConfig
from stiv_jax.text.embedding import FrozenTokenEmbedding
from stiv_jax.text.encoder import TextEncoder
from stiv_jax.text.t5 import T5EncoderConfig
from stiv_jax.vae.autoencoder_kl import AutoencoderKLConfig
from stiv_jax.vae.frames import FrameAutoencoder
from stiv_jax.vae.pixel import PixelAutoencoder
from stiv_jax.weights.config import config_get

TEXT_KINDS = ("cached", "embedding", "clip", "t5")
AUTOENCODER_KINDS = ("pixel", "kl")
_PRETRAINED_TEXT = {"clip": CLIPTextConfig, "t5": T5EncoderConfig}


def _dtype_override(config: Any) -> dict[str, Any]:
    dtype = config_get(config, "dtype")
    return {"dtype": dtype} if dtype else {}


def build_text_encoder(config: Any, dim: int | None = None) -> nnx.Module | None:
    """The frozen prompt encoder ``config`` (a ``config.text`` section) names; ``dim`` is the
    width of the ``embedding`` table (the DiT's ``text_dim``). ``None`` for ``kind='cached'``.
    Without ``kind``, a ``checkpoint``'s own kind is used."""
    kind, checkpoint = config_get(config, "kind"), config_get(config, "checkpoint")
    if kind not in TEXT_KINDS and not (not kind and checkpoint):
        raise ConfigError(
            f"config.text.kind={kind!r}: unknown text encoder kind {kind!r}; use one of {'|'.join(TEXT_KINDS)}"
        )
    if kind == "cached":
        return None
    if kind == "embedding":
        if dim is None:
            raise ConfigError("config.text.kind='embedding' needs the model's text_dim")
        return FrozenTokenEmbedding(
            int(config_get(config, "vocab_size", 32128)), dim, seed=int(config_get(config, "seed", 0))
        )
    if checkpoint:
        loaded = load_pretrained(checkpoint, **_dtype_override(config))
        if loaded.kind not in _PRETRAINED_TEXT or (kind and loaded.kind != kind):
            raise ConfigError(
                f"config.text.checkpoint={checkpoint} holds a {loaded.kind!r} model, not a {kind or 'text'} encoder"
            )
        model = loaded.model
    elif config_get(config, "model"):
        config_cls = _PRETRAINED_TEXT[kind]
        cfg = config_cls.resolve(config_get(config, "model")).replace(**_dtype_override(config))
        model = random_init(kind, cfg, int(config_get(config, "seed", 0)))
    else:
        raise ConfigError(
            f"config.text.kind={kind!r} needs config.text.checkpoint (a stiv-import directory) "
            "or config.text.model (a preset, random init)"
        )
    return TextEncoder(model, use_projection=bool(config_get(config, "use_projection", False)))


def load_text_encoder(config: Any) -> TextEncoder:
    """Like :func:`build_text_encoder`, but only from a pretrained ``checkpoint`` (no random init)."""
    if not config_get(config, "checkpoint"):
        raise ConfigError(
            "the text encoder config needs `checkpoint`: a directory written by stiv-import --kind=clip|t5"
        )
    return build_text_encoder(config)


def build_autoencoder(config: Any) -> PixelAutoencoder | FrameAutoencoder:
    """The frame autoencoder ``config`` (a ``config.autoencoder`` section) names."""
    kind = config_get(config, "kind", "pixel")
    if kind not in AUTOENCODER_KINDS:
        raise ConfigError(
            f"config.autoencoder.kind={kind!r}: unknown autoencoder kind {kind!r}; use one of {'|'.join(AUTOENCODER_KINDS)}"
        )
    scale, shift = float(config_get(config, "scaling_factor", 1.0)), float(config_get(config, "shift_factor", 0.0))
    if kind == "pixel":
        if not scale > 0:
            raise ConfigError(f"config.autoencoder.scaling_factor={scale}: must be positive")
        return PixelAutoencoder(int(config_get(config, "downsample", 1)), scaling_factor=scale, shift_factor=shift)
    if (scale, shift) != (1.0, 0.0):
        raise ConfigError(
            "config.autoencoder.scaling_factor / shift_factor are for kind='pixel'; "
            "a KL VAE's scaling is in its own config (stiv-import --kind=vae)"
        )
    checkpoint, preset = config_get(config, "checkpoint"), config_get(config, "model")
    if checkpoint:
        model = load_pretrained(checkpoint, expect_kind="vae", **_dtype_override(config)).model
    elif preset:
        cfg = AutoencoderKLConfig.resolve(preset).replace(**_dtype_override(config))
        model = random_init("vae", cfg, int(config_get(config, "seed", 0)))
    else:
        raise ConfigError(
            "config.autoencoder.kind='kl' needs config.autoencoder.checkpoint (stiv-import --kind=vae) "
            "or config.autoencoder.model (a preset, random init)"
        )
    return FrameAutoencoder(model, chunk_size=int(config_get(config, "chunk_size", 16) or 16))


def load_autoencoder(config: Any) -> FrameAutoencoder:
    """Like :func:`build_autoencoder` for ``kind='kl'``, but only from a pretrained ``checkpoint``."""
    if not config_get(config, "checkpoint"):
        raise ConfigError("the autoencoder config needs `checkpoint`: a directory written by stiv-import --kind=vae")
    return build_autoencoder({**_as_dict(config), "kind": "kl"})


def from_spec(spec: str, *, what: str) -> dict[str, Any]:
    """A command-line encoder spec → a config section for the builders above.

    Autoencoder: ``pixel`` | ``pixel:F[:scale=S][:shift=B]`` | ``kl:DIR``. Text: ``none`` |
    ``clip:DIR`` | ``t5:DIR`` (``DIR`` written by ``stiv-import``, local or ``gs://``).
    """
    kind, _, arg = spec.partition(":")
    if what == "autoencoder":
        if kind == "pixel":
            return _pixel_spec(spec, arg)
        if kind == "kl" and arg:
            return {"kind": "kl", "checkpoint": arg}
        raise ConfigError(f"--autoencoder={spec!r}: use {_PIXEL_SPEC} or kl:DIR (a stiv-import --kind=vae directory)")
    if kind in ("", "none") and not arg:
        return {"kind": "cached"}
    if kind in _PRETRAINED_TEXT and arg:
        return {"kind": kind, "checkpoint": arg}
    raise ConfigError(f"--text_encoder={spec!r}: use none, clip:DIR or t5:DIR (a stiv-import directory)")


_PIXEL_SPEC = "pixel, pixel:F, pixel:F:scale=S:shift=B"
_PIXEL_KEYS = {"scale": "scaling_factor", "shift": "shift_factor"}


def _pixel_spec(spec: str, arg: str) -> dict[str, Any]:
    """``pixel[:F][:scale=S][:shift=B]`` → a ``kind='pixel'`` section (vae/pixel.py)."""
    out: dict[str, Any] = {"kind": "pixel", "downsample": 1}
    parts = arg.split(":") if arg else []
    if parts and parts[0].isdigit():
        out["downsample"] = int(parts.pop(0))
    for part in parts:
        key, eq, value = part.partition("=")
        try:
            if not eq or key not in _PIXEL_KEYS or _PIXEL_KEYS[key] in out:
                raise ValueError
            out[_PIXEL_KEYS[key]] = float(value)
        except ValueError:
            raise ConfigError(f"--autoencoder={spec!r}: use {_PIXEL_SPEC} (numbers)") from None
    if out["downsample"] < 1 or not out.get("scaling_factor", 1.0) > 0:
        raise ConfigError(f"--autoencoder={spec!r}: the factor F and the scale S must be positive")
    return out


def _as_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config) if isinstance(config, dict) else {k: getattr(config, k) for k in vars(config)}


def resolve_text_config(config: ml_collections.ConfigDict, text_checkpoint: str | None):
    """``config`` with ``text`` pointing at ``text_checkpoint`` (needed for cached-text runs)."""
    if text_checkpoint:
        meta = paths.join(text_checkpoint, "config.json")
        if not paths.exists(meta):
            raise FileNotFoundError(
                f"--text_encoder {text_checkpoint!r} is not a stiv-import directory (no config.json)"
            )
        kind = json.loads(paths.read_text(meta)).get("kind")
        config = ml_collections.ConfigDict(config.to_dict())
        config.text.kind, config.text.checkpoint = kind, text_checkpoint
    elif config.text.kind == "cached":
        raise ValueError(
            "this run trained on cached text embeddings (config.text.kind='cached'); "
            "pass the text encoder that wrote them (--text_encoder=DIR, a stiv-import "
            "directory)"
        )
    return config
