"""Configs of the pretrained parts (CLIP, T5, VAE): presets, JSON, and Hugging Face config.json.

Each config is a frozen dataclass deriving from :class:`PretrainedConfig`. :meth:`resolve` accepts
what a user naturally has at hand: a preset name (``"clip-bigG"``), a JSON file (ours, or the
``config.json`` that ships beside Hugging Face / diffusers weights), a dict, or a config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import jax.numpy as jnp

C = TypeVar("C", bound="PretrainedConfig")


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """Base: ``PRESETS`` (name → field overrides) and converters to/from plain dicts."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: keys whose presence marks a Hugging Face / diffusers config.json
    HF_MARKERS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_hf(cls: type[C], hf: Mapping[str, Any]) -> C:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}; known: {sorted(names)}")
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**fields)

    @classmethod
    def resolve(cls: type[C], spec: str | Mapping[str, Any] | PretrainedConfig) -> C:
        """Preset name, JSON path (ours or HF config.json), dict or config → config."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            if spec in cls.PRESETS:
                return cls.from_dict(cls.PRESETS[spec])
            if os.path.isfile(spec):
                with open(spec) as f:
                    return cls.resolve(json.load(f))
            raise ValueError(
                f"{spec!r} is neither a {cls.__name__} preset ({', '.join(sorted(cls.PRESETS))}) nor a JSON file"
            )
        if isinstance(spec, Mapping):
            if any(key in spec for key in cls.HF_MARKERS):
                return cls.from_hf(spec)
            return cls.from_dict(spec)
        raise TypeError(f"cannot make a {cls.__name__} from {type(spec).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(getattr(self, "dtype", "float32"))

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(getattr(self, "param_dtype", "float32"))


def config_get(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` for dicts, ``config.key`` for ``ml_collections.ConfigDict`` / objects."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)
