"""Pretrained parts on disk: import torch weights, save them as an orbax checkpoint, load them back.

A pretrained directory (written by ``stiv-import``) holds

- ``config.json``: ``{"format", "kind": "clip" | "t5" | "vae", "config": {...}, "source", "num_params"}``
- ``params/``: an orbax checkpoint of the parameters (the module's ``nnx.Param`` state, pure dict).

:func:`load_pretrained` rebuilds the module from the JSON config and restores the parameters —
optionally straight onto a device mesh, each parameter sharded by its logical axis names
(stiv_jax/parallel/rules.py), so no host holds a full copy of T5-XXL.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from stiv_jax.parallel.rules import logical_to_spec
from stiv_jax.storage import paths
from stiv_jax.text.clip import CLIPTextConfig, CLIPTextModel
from stiv_jax.text.convert import convert_clip, convert_t5
from stiv_jax.text.t5 import T5Encoder, T5EncoderConfig
from stiv_jax.vae.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from stiv_jax.vae.convert import convert_vae
from stiv_jax.weights.config import PretrainedConfig
from stiv_jax.weights.torch_state import load_state_dict

FORMAT = "stiv_jax.encoders.pretrained/1"


@dataclasses.dataclass(frozen=True)
class Kind:
    config_cls: type[PretrainedConfig]
    module_cls: type[nnx.Module]
    convert: Callable[[Mapping[str, np.ndarray], Any], nnx.Module]


KINDS: dict[str, Kind] = {
    "clip": Kind(CLIPTextConfig, CLIPTextModel, convert_clip),
    "t5": Kind(T5EncoderConfig, T5Encoder, convert_t5),
    "vae": Kind(AutoencoderKLConfig, AutoencoderKL, convert_vae),
}


class Pretrained(NamedTuple):
    kind: str
    config: PretrainedConfig
    model: nnx.Module


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown pretrained kind {kind!r}; use one of {sorted(KINDS)}")
    return KINDS[kind]


def num_params(model: nnx.Module) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract_model(kind: str, config: PretrainedConfig) -> nnx.Module:
    """The module with ``jax.ShapeDtypeStruct`` leaves: shapes and counts without allocation."""
    cls = _kind(kind).module_cls
    return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))


def random_init(kind: str, config: PretrainedConfig, seed: int = 0) -> nnx.Module:
    """A randomly initialised module (tests, toy runs); built inside one jit, not op by op."""
    cls = _kind(kind).module_cls
    return nnx.jit(lambda: cls(config, rngs=nnx.Rngs(seed)))()


def import_weights(kind: str, weights: str, config: Any) -> Pretrained:
    """Reads a torch/safetensors state dict and converts it into our module (float32)."""
    k = _kind(kind)
    cfg = k.config_cls.resolve(config)
    return Pretrained(kind, cfg, k.convert(load_state_dict(weights), cfg))


def save_pretrained(directory: str, pretrained: Pretrained, *, source: str | None = None) -> str:
    """Writes ``config.json`` and the orbax ``params/`` checkpoint; returns the absolute directory."""
    import orbax.checkpoint as ocp

    directory = os.fspath(paths.as_path(directory))  # local (made absolute) or gs://
    paths.as_path(directory).mkdir(parents=True, exist_ok=True)
    params = nnx.to_pure_dict(nnx.state(pretrained.model, nnx.Param))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(paths.as_path(paths.join(directory, "params")), params, force=True)
    checkpointer.wait_until_finished()
    meta = {
        "format": FORMAT,
        "kind": pretrained.kind,
        "config": pretrained.config.to_dict(),
        "source": source,
        "num_params": num_params(pretrained.model),
    }
    paths.write_text(paths.join(directory, "config.json"), json.dumps(meta, indent=2))
    return directory


def _sharding(var: nnx.Variable, mesh: jax.sharding.Mesh | None, rules: Sequence | None) -> jax.sharding.Sharding:
    if mesh is None:
        return jax.sharding.SingleDeviceSharding(jax.devices()[0])
    spec = logical_to_spec(var.get_metadata().get("out_sharding"), None if rules is None else tuple(map(tuple, rules)))
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    entries = []
    for dim, entry in zip(var.shape, tuple(spec) + (None,) * (len(var.shape) - len(spec))):
        axes = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
        axes = tuple(a for a in axes if a in sizes)
        size = int(np.prod([sizes[a] for a in axes])) if axes else 1
        entries.append(None if not axes or dim % size else (axes[0] if len(axes) == 1 else axes))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*entries))


def load_pretrained(
    directory: str,
    *,
    expect_kind: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence | None = None,
    **config_overrides: Any,
) -> Pretrained:
    """Rebuilds the module saved by :func:`save_pretrained`.

    ``mesh`` (+ ``rules``, default the project's logical-axis rules): restore every parameter
    sharded by its logical names (dimensions a mesh axis does not divide stay replicated).
    ``config_overrides`` replace config fields, e.g. ``dtype="bfloat16"`` for the compute dtype
    or ``param_dtype="bfloat16"`` to restore the weights cast to bfloat16.
    """
    import orbax.checkpoint as ocp

    directory = os.fspath(paths.as_path(directory))
    meta_path = paths.join(directory, "config.json")
    if not paths.exists(meta_path):
        raise FileNotFoundError(
            f"{directory} is not a pretrained directory (no config.json; write one with stiv-import)"
        )
    meta = json.loads(paths.read_text(meta_path))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    kind = meta["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise ValueError(f"{directory} holds a {kind!r} model, but a {expect_kind!r} model was asked for")
    cfg = _kind(kind).config_cls.from_dict(meta["config"]).replace(**config_overrides)
    graphdef, state = nnx.split(abstract_model(kind, cfg))
    target = jax.tree.map(
        lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=_sharding(v, mesh, rules)),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    restored = ocp.StandardCheckpointer().restore(
        paths.as_path(paths.join(directory, "params")), nnx.to_pure_dict(target)
    )
    nnx.replace_by_pure_dict(state, restored)
    return Pretrained(kind, cfg, nnx.merge(graphdef, state))
