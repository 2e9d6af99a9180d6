"""PyTorch state dict → Flax NNX parameters: loading, key matching, layout changes, errors.

One implementation shared by the CLIP, T5 and VAE converters (stiv_jax/text/convert.py,
stiv_jax/vae/convert.py). A converter is a list of :class:`Rule` s, each naming one of our
parameters (a dotted NNX state path), the torch key(s) it comes from and the layout change
(``linear``: ``(out, in) → (in, out)``; ``conv2d``: ``OIHW → HWIO``). A rule with several source
keys stacks them along a new leading axis (the ``layers`` axis of scanned blocks).
The same rules run backwards (:func:`invert_rules`, Flax → torch) through the inverse registered
per transform (:func:`inverse_of`).

:func:`apply_rules` checks everything before building anything and raises one
:class:`ConversionError` naming every missing, unexpected and mis-shaped key.
Parameters are built from an abstract model (``nnx.eval_shape``), so converting T5-XXL never
allocates a random copy first.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from stiv_jax.errors import UserError

StateDict = dict[str, np.ndarray]


class ConversionError(UserError, ValueError):
    """A state dict does not match the model it is converted into."""


def identity(w: np.ndarray) -> np.ndarray:
    return w


def linear(w: np.ndarray) -> np.ndarray:
    """``torch.nn.Linear.weight (out, in)`` → Flax kernel ``(in, out)``; 1×1 conv weights too."""
    if w.ndim == 4 and w.shape[2:] == (1, 1):  # LDM-era attention stored as 1x1 convs
        w = w[:, :, 0, 0]
    return w.T if w.ndim == 2 else w


def conv2d(w: np.ndarray) -> np.ndarray:
    """``torch.nn.Conv2d.weight (O, I, kH, kW)`` → Flax kernel ``(kH, kW, I, O)``."""
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


# Inverse layout changes (our layout → torch), keyed by the forward transform.
INVERSES: dict[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]] = {identity: identity}


def inverse_of(transform: Callable[[np.ndarray], np.ndarray]):
    """Decorator registering the decorated function as ``transform``'s inverse."""

    def register(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        INVERSES[transform] = fn
        return fn

    return register


@inverse_of(linear)
def linear_to_torch(w: np.ndarray) -> np.ndarray:
    """Flax kernel ``(in, out)`` → ``torch.nn.Linear.weight (out, in)``."""
    return w.T if w.ndim == 2 else w


@inverse_of(conv2d)
def conv2d_to_torch(w: np.ndarray) -> np.ndarray:
    """Flax kernel ``(kH, kW, I, O)`` → ``torch.nn.Conv2d.weight (O, I, kH, kW)``."""
    return w.transpose(3, 2, 0, 1) if w.ndim == 4 else w


@dataclasses.dataclass(frozen=True)
class Rule:
    """``target`` (our dotted param path) ← ``sources`` (torch keys, stacked if more than one)."""

    target: str
    sources: tuple[str, ...]
    transform: Callable[[np.ndarray], np.ndarray] = identity
    stacked: bool = False

    @classmethod
    def one(cls, target: str, source: str, transform=identity) -> Rule:
        return cls(target, (source,), transform)

    @classmethod
    def stack(cls, target: str, sources: Iterable[str], transform=identity) -> Rule:
        return cls(target, tuple(sources), transform, stacked=True)


# --------------------------------------------------------------------------------------------
# Reading weight files.


def _to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.detach().cpu().numpy()


_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _check_one(path: str) -> None:
    """:class:`ConversionError` naming ``path`` when it is not what its suffix says (a renamed
    text file, a truncated download): the header is parsed, no tensor is read."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, "np"):  # parses the header, checks it covers the file
                pass
        except SafetensorError as e:
            raise ConversionError(f"{path}: not a valid safetensors file ({e})") from e
    elif path.endswith(_TORCH_SUFFIXES):
        with open(path, "rb") as f:
            legacy_pickle = f.read(1) == b"\x80"
        if not (legacy_pickle or zipfile.is_zipfile(path)):
            raise ConversionError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def _load_one(path: str) -> StateDict:
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if path.endswith(_TORCH_SUFFIXES):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]  # Lightning / LDM checkpoints
        if not isinstance(obj, Mapping):
            raise ConversionError(f"{path}: expected a state dict (mapping of tensors), got {type(obj).__name__}")
        return {k: _to_numpy(v) for k, v in obj.items() if hasattr(v, "detach")}
    raise ConversionError(f"{path}: unsupported weight file (use .safetensors, .bin, .pt, .pth or .ckpt)")


def load_state_dict(path: str) -> StateDict:
    """Reads a torch state dict as float32/int numpy arrays, with no torch modules involved.

    ``path`` is one ``.safetensors`` / ``.bin`` / ``.pt`` file, or a directory of them (sharded
    Hugging Face checkpoints), which are merged. Half-precision weights are upcast to float32.
    """
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) or sorted(glob.glob(os.path.join(path, "*.bin")))
        if not files:
            raise ConversionError(f"{path}: directory holds no .safetensors or .bin weight files")
    elif os.path.exists(path):
        files = [path]
    else:
        raise FileNotFoundError(f"weights not found: {path}")
    for f in files:  # every file is checked before any is read
        _check_one(f)
    out: StateDict = {}
    for f in files:
        out.update(_load_one(f))
    upcast = lambda v: v.astype(np.float32) if jax.numpy.issubdtype(v.dtype, jax.numpy.floating) else v
    return {k: upcast(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Matching a state dict against a model.


def param_shapes(abstract_model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Dotted path → shape of every ``nnx.Param`` of a (possibly abstract) model."""
    state = nnx.state(abstract_model, nnx.Param)
    return {".".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(state)}


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Dotted path → value (numpy, as stored) of every ``nnx.Param`` of a concrete model."""
    state = nnx.state(model, nnx.Param)
    return {".".join(map(str, path)): np.asarray(v.get_value()) for path, v in nnx.to_flat_state(state)}


def _fmt(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def apply_rules(
    state_dict: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    ignore: Sequence[str] = (),
    what: str = "model",
) -> dict[str, np.ndarray]:
    """Converts ``state_dict`` to ``{our dotted path: array}`` following ``rules``.

    ``shapes`` are our parameter shapes (:func:`param_shapes`); ``ignore`` are regexes of torch
    keys that are legitimately unused (a decoder next to the encoder, buffers). Raises
    :class:`ConversionError` listing all missing, unexpected and mis-shaped keys at once.
    """
    uncovered = sorted(set(shapes) - {r.target for r in rules})
    if uncovered:  # a bug in the converter, not in the user's file
        raise AssertionError(f"{what} converter has no rule for parameters: {_fmt(uncovered)}")

    missing, mismatched, out, used = [], [], {}, set()
    for rule in rules:
        want = shapes[rule.target]
        per_source = want[1:] if rule.stacked else want
        arrays = []
        for key in rule.sources:
            if key not in state_dict:
                missing.append(key)
                continue
            used.add(key)
            w = rule.transform(np.asarray(state_dict[key]))
            if tuple(w.shape) != tuple(per_source):
                mismatched.append(
                    f"{key}: torch shape {tuple(np.shape(state_dict[key]))} gives {tuple(w.shape)} "
                    f"for {rule.target!r}, which needs {tuple(per_source)}"
                )
            arrays.append(w)
        if len(arrays) == len(rule.sources) and not mismatched:
            out[rule.target] = np.stack(arrays) if rule.stacked else arrays[0]

    patterns = [re.compile(p) for p in ignore]
    unexpected = sorted(k for k in state_dict if k not in used and not any(p.search(k) for p in patterns))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:12]))
    if problems:
        raise ConversionError(f"cannot convert state dict into {what}:\n  " + "\n  ".join(problems))
    return out


def build_with_params(abstract_model: nnx.Module, params: dict[str, np.ndarray]) -> nnx.Module:
    """Fills an abstract model (``nnx.eval_shape``) with ``params`` (dotted path → array), in the
    abstract model's dtypes. Entries are popped from ``params`` as they are placed, so host
    memory peaks near two copies of the weights rather than three (T5-XXL: 19 GB each in f32)."""
    graphdef, state = nnx.split(abstract_model)
    flat = []
    for path, var in nnx.to_flat_state(state):
        key = ".".join(map(str, path))
        if key not in params:
            raise ConversionError(f"no value for parameter {key!r}")
        flat.append((path, var.replace(jax.numpy.asarray(params.pop(key), var.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def convert(
    state_dict: Mapping[str, np.ndarray],
    abstract_model: nnx.Module,
    rules: Sequence[Rule],
    *,
    ignore: Sequence[str] = (),
    what: str = "model",
) -> nnx.Module:
    """``state_dict`` → a concrete NNX model with the abstract model's structure and dtypes."""
    params = apply_rules(state_dict, rules, param_shapes(abstract_model), ignore=ignore, what=what)
    return build_with_params(abstract_model, params)


def _float32(w) -> np.ndarray:
    w = np.asarray(w)
    if jax.numpy.issubdtype(w.dtype, jax.numpy.floating):  # bfloat16 included
        w = w.astype(np.float32)
    return w


def invert_rules(params: Mapping[str, np.ndarray], rules: Sequence[Rule], *, what: str = "model") -> StateDict:
    """Our ``{dotted path: array}`` (:func:`flat_params`) → the torch state dict ``rules`` read.

    Each rule's transform is undone by its registered inverse; stacked parameters are split
    along their leading axis into their per-layer keys. Arrays come back as contiguous, writable
    copies, floating ones as float32. Raises :class:`ConversionError` listing parameters without
    a rule, rules without a parameter, transforms without an inverse and stacks of the wrong length.
    """
    problems = []
    no_rule = sorted(set(params) - {r.target for r in rules})
    if no_rule:
        problems.append(f"parameters without a rule ({len(no_rule)}): {_fmt(no_rule)}")
    missing = [r.target for r in rules if r.target not in params]
    if missing:
        problems.append(f"missing parameters ({len(missing)}): {_fmt(missing)}")
    no_inverse = sorted(
        {getattr(r.transform, "__name__", repr(r.transform)) for r in rules if r.transform not in INVERSES}
    )
    if no_inverse:
        problems.append(f"transforms without a registered inverse: {_fmt(no_inverse)}")
    out: StateDict = {}
    for rule in rules:
        if rule.target not in params or rule.transform not in INVERSES:
            continue
        w = _float32(params[rule.target])
        if rule.stacked and (w.ndim == 0 or w.shape[0] != len(rule.sources)):
            problems.append(f"{rule.target}: shape {w.shape} does not stack {len(rule.sources)} torch keys")
            continue
        inverse = INVERSES[rule.transform]
        for key, part in zip(rule.sources, w if rule.stacked else [w]):
            if key in out:
                problems.append(f"{key}: written by more than one rule")
            out[key] = np.array(inverse(part), order="C")  # an owned, writable copy
    if problems:
        raise ConversionError(f"cannot convert {what} parameters into a state dict:\n  " + "\n  ".join(problems))
    return out
