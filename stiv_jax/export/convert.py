"""Flax ↔ PyTorch parameter conversion for the STIV DiT (stiv_jax/export/torch_stiv.py).

Flax params are the nested pure dict of ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``; the
PyTorch side is a flat ``{key: array}`` state dict. The mapping, per parameter:

- stacked (scanned) layers ``blocks`` / ``decoder_blocks`` ``[L, ...]`` → ``blocks.{i}.…``;
- Linear ``kernel (in, out)`` → ``weight (out, in)``; RMSNorm ``scale`` → ``weight``;
- ``patch_embed.kernel (pt, p, p, C, d)`` → Conv3d ``weight (d, C, pt, p, p)``;
- ``unpatchify.kernel (d, pt, p, p, C)`` → ConvTranspose3d layout ``(d, C, pt, p, p)``,
  ``unpatchify.bias (p, p, C)`` → ``(C, p, p)``;
- ``cond_indicator.kernel (pt, d)`` → ``weight (d, pt)``; tables (``modulation``,
  ``final_modulation``, ``mask_token``) unchanged.

Both directions check every key and shape against the config (the abstract Flax model built from
it) and raise :class:`ConversionError` listing each missing, unexpected or mis-shaped key. Values
are only transposed and optionally cast, so Flax → PyTorch → Flax is bit-exact in float32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import ml_dtypes
import numpy as np
from flax import nnx, traverse_util

from stiv_jax.export.torch_stiv import mismatches, unsupported
from stiv_jax.model.config import get_model_config, resolve
from stiv_jax.model.dit import abstract_model
from stiv_jax.storage import checkpoints, paths
from stiv_jax.storage.workdir import Workdir, as_workdir
from stiv_jax.weights.torch_state import ConversionError

Path = tuple[str, ...]
STACKED = ("blocks", "decoder_blocks")
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}

# Flax → PyTorch axis permutations of the non-Linear kernels (per-layer paths).
_PERMUTATIONS: dict[Path, tuple[int, ...]] = {
    ("patch_embed", "kernel"): (4, 3, 0, 1, 2),
    ("unpatchify", "kernel"): (0, 4, 1, 2, 3),
    ("unpatchify", "bias"): (2, 0, 1),
}


def model_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The locked, resolved (size-derived fields filled in) Flax model ConfigDict from a dict
    (e.g. the exported JSON) or a ConfigDict; :class:`ConversionError` if the PyTorch STIV does
    not implement it (``torch_stiv.unsupported``: e.g. ``attention_layout='joint'``)."""
    if isinstance(config, ml_collections.ConfigDict):
        c = resolve(config)
    else:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        if "size" not in d:
            raise ConversionError(f"model config has no 'size' key: {sorted(d)}")
        c = resolve(get_model_config(d.pop("size"), **d))
    if problems := unsupported(c.to_dict()):  # it would load and silently compute another function
        raise ConversionError(
            "the PyTorch STIV does not implement this model, it cannot be exported: " + "; ".join(problems)
        )
    return c


def load_run(
    workdir: str | os.PathLike | Workdir, ema: bool = True, step: int | None = None
) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
    """``(model config, pure numpy params, step)`` of a run's latest (or given) checkpoint, EMA by
    default: the model config is checked first (a directory that is no run fails early), then only
    the params subtree is read (``stiv_jax.storage.checkpoints.restore_params``)."""
    cfg = model_config(as_workdir(workdir).model_config_dict())
    params, step = checkpoints.restore_params(workdir, ema=ema, step=step)
    return cfg, params, step


def _layout(path: Path) -> tuple[str, tuple[int, ...] | None]:
    """``(torch leaf name, Flax→torch permutation)`` of a per-layer Flax param path."""
    if path in _PERMUTATIONS:
        return ("weight" if path[-1] == "kernel" else path[-1]), _PERMUTATIONS[path]
    if path[-1] == "kernel":
        return "weight", (1, 0)
    if path[-1] == "scale":
        return "weight", None
    return path[-1], None


def torch_entries(path: Path, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...] | None, tuple[int, ...]]]:
    """``[(torch key, permutation, torch shape)]`` for one Flax param (one entry per layer if stacked)."""
    if path[0] in STACKED:
        rest = path[1:]
        leaf, perm = _layout(rest)
        per_layer = shape[1:] if perm is None else tuple(shape[1:][i] for i in perm)
        return [(".".join((path[0], str(i), *rest[:-1], leaf)), perm, per_layer) for i in range(shape[0])]
    leaf, perm = _layout(path)
    return [(".".join((*path[:-1], leaf)), perm, shape if perm is None else tuple(shape[i] for i in perm))]


def expected_shapes(config) -> dict[Path, tuple[int, ...]]:
    """``{Flax path: shape}`` of every parameter of the model ``config`` describes (no allocation)."""
    state = nnx.state(abstract_model(model_config(config)), nnx.Param)
    return {tuple(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(state)}


def _check(want: Mapping[str, tuple], got: Mapping[str, tuple], what: str) -> None:
    problems = mismatches(want, got)
    if problems:
        raise ConversionError(f"{what} do not match the model config:\n  " + "\n  ".join(problems))


def _cast(a: np.ndarray, dtype: str | None) -> np.ndarray:
    return a if dtype is None else a.astype(DTYPES[dtype])


def flax_to_torch(params: Mapping[str, Any], config, *, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Flax pure params → PyTorch state dict of numpy arrays (``dtype``: float32|bfloat16|None = as is)."""
    flat = {tuple(map(str, k)): np.asarray(v) for k, v in traverse_util.flatten_dict(dict(params)).items()}
    want = expected_shapes(config)
    _check({".".join(k): s for k, s in want.items()}, {".".join(k): v.shape for k, v in flat.items()}, "Flax params")
    out = {}
    for path, value in flat.items():
        for i, (key, perm, _) in enumerate(torch_entries(path, value.shape)):
            layer = value[i] if path[0] in STACKED else value
            out[key] = _cast(np.ascontiguousarray(layer if perm is None else layer.transpose(perm)), dtype)
    return out


def _numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (bfloat16 kept bit-exact via ml_dtypes)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        import torch

        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(value)


def torch_to_flax(state_dict: Mapping[str, Any], config, *, dtype: str | None = None) -> dict:
    """PyTorch state dict (tensors or numpy arrays) → Flax pure params (nested dict of numpy)."""
    want = expected_shapes(config)
    layout = {path: torch_entries(path, shape) for path, shape in want.items()}
    _check(
        {k: s for entries in layout.values() for k, _, s in entries},
        {k: tuple(v.shape) for k, v in state_dict.items()},
        "PyTorch tensors",
    )
    flat = {}
    for path, entries in layout.items():
        layers = []
        for key, perm, _ in entries:
            v = _numpy(state_dict[key])
            layers.append(v if perm is None else v.transpose(np.argsort(perm)))
        flat[path] = _cast(np.stack(layers) if path[0] in STACKED else np.ascontiguousarray(layers[0]), dtype)
    return traverse_util.unflatten_dict(flat)


def config_to_dict(config) -> dict:
    """JSON-ready dict of the model config (the file written beside the safetensors)."""
    return json.loads(json.dumps(model_config(config).to_dict()))


def export(
    params: Mapping[str, Any],
    config,
    out: str | os.PathLike,
    *,
    dtype: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Writes ``out`` (``FILE.safetensors``) and ``FILE.json`` (the model config, with
    ``param_dtype`` set to ``dtype`` when given); returns both paths."""
    from safetensors.numpy import save_file

    out = os.fspath(out)
    if not out.endswith(".safetensors"):
        raise ValueError(f"--out must end with .safetensors, got {out!r}")
    tensors = flax_to_torch(params, config, dtype=dtype)
    cfg = config_to_dict(config) | ({"param_dtype": dtype} if dtype else {})
    with paths.staged_file(out) as local:  # a gs:// output is written locally, then uploaded
        save_file(tensors, local, metadata={"format": "pt", "source": "stiv_jax", **(metadata or {})})
    cfg_path = out[: -len(".safetensors")] + ".json"
    paths.write_text(cfg_path, json.dumps(cfg, indent=2, sort_keys=True))
    if not paths.is_remote(out):  # safetensors writes 0600 files; give it the usual mode
        os.chmod(out, paths.default_file_mode())
    return out, cfg_path


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: numpy array}`` of a safetensors file; :class:`ConversionError` naming the file if
    it is not one (a renamed or truncated file)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(path)
    except SafetensorError as e:
        raise ConversionError(f"{path}: not a valid safetensors file ({e})") from e


def read_export(path: str | os.PathLike) -> tuple[ml_collections.ConfigDict, dict]:
    """``(model config, Flax pure params)`` from ``FILE.safetensors`` + ``FILE.json``: the
    PyTorch → Flax direction for files (e.g. weights fine-tuned in PyTorch and saved with
    ``safetensors.torch.save_file(model.state_dict(), ...)`` beside the same JSON)."""
    path = os.fspath(path)
    cfg_path = os.path.splitext(path)[0] + ".json"
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: model config missing (expected beside {path})")
    with open(cfg_path) as f:
        try:
            cfg = model_config(json.load(f))
        except json.JSONDecodeError as e:
            raise ConversionError(f"{cfg_path}: not a JSON model config ({e})") from e
    state = load_safetensors(path)
    try:
        return cfg, torch_to_flax(state, cfg)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None
