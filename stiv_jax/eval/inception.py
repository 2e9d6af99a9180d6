"""FID InceptionV3 (2048-d pool3 features) in Flax NNX, with its converter and input preprocessing.

The network is the TF-FID graph (``pt_inception-2015-12-05``, Heusel et al. 2017) in the layout of
pytorch-fid's ``fid_inception_v3`` (``pytorch_fid/inception.py``: torchvision's Inception3 with the
``FIDInceptionA/C/E_1/E_2`` patches — average pools that exclude padding, max pooling in the last
block), which torch-fidelity's ``FeatureExtractorInceptionV3`` reproduces with the same state-dict
keys (``Conv2d_1a_3x3.conv.weight``, ``….bn.running_mean``, ``Mixed_5b.branch1x1.conv.weight``, …).
BatchNorm eps is 0.001; the ``fc`` classifier (logits) is not needed for FID and is ignored.

Parity is tested against torch-fidelity 0.4.0's implementation of this layout
(tests/test_eval_fid.py), not against pytorch-fid's module itself: pytorch-fid imports torchvision,
which has no CPU build for this project's PyTorch. Both load the same weight file.

Preprocessing to 299×299 in [−1, 1] (:func:`preprocess`), pinned per ``resize``:

- ``"tf1"`` (default): the original TF-FID graph and torch-fidelity — bilinear resize of the uint8
  values as TensorFlow 1.x's ``ResizeBilinear`` (``align_corners=False``, no half-pixel centres:
  source = destination · in/out; torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``),
  then ``(x − 128) / 128``;
- ``"pytorch-fid"``: pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)`` —
  ``x / 255``, bilinear with half-pixel centres and no antialiasing (``F.interpolate(mode="bilinear",
  align_corners=False)``, here ``jax.image.resize(method="linear", antialias=False)``), then ``2x − 1``.

Both are the identity resize on 299×299 inputs; they then differ only by the scaling
(``(x − 128)/128`` vs ``(x − 127.5)/127.5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.weights.torch_state import Rule, conv2d, convert, identity, load_state_dict, param_shapes

INPUT_SIZE = 299
FEATURE_DIM = 2048
RESIZES = ("tf1", "pytorch-fid")
BN_EPS = 1e-3


class BasicConv2d(nnx.Module):
    """Conv (no bias) → BatchNorm (inference statistics, stored as params) → ReLU, NHWC."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, *, rngs: nnx.Rngs):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        self.conv = nnx.Conv(
            cin,
            cout,
            (kh, kw),
            strides=(stride, stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            kernel_init=nnx.initializers.he_normal(),
            rngs=rngs,
        )
        self.bn = FrozenBatchNorm(cout)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


class FrozenBatchNorm(nnx.Module):
    """``(x − mean) / sqrt(var + eps) · scale + bias``; all four are ``nnx.Param`` (loaded, frozen)."""

    def __init__(self, dim: int, eps: float = BN_EPS):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,)))
        self.bias = nnx.Param(jnp.zeros((dim,)))
        self.mean = nnx.Param(jnp.zeros((dim,)))
        self.var = nnx.Param(jnp.ones((dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        inv = jax.lax.rsqrt(self.var[...] + self.eps) * self.scale[...]
        return (x - self.mean[...]) * inv + self.bias[...]


def max_pool(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
    """3×3 max pool; padding is −inf (torch ``max_pool2d``)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(
        x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad
    )


def avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3×3, stride 1, pad 1 average pool that divides by the in-image count (``count_include_pad=False``)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    window = lambda v: jax.lax.reduce_window(v, jnp.array(0, v.dtype), jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    return window(x) / window(jnp.ones((1, *x.shape[1:3], 1), x.dtype))


class InceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b5, b3, pool], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):
    def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
        row, col = dict(padding=(0, 3), rngs=rngs), dict(padding=(3, 0), rngs=rngs)
        self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), **row)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b7, d, pool], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class InceptionE(nnx.Module):
    """``pool="avg"``: FIDInceptionE_1 (padding excluded); ``"max"``: FIDInceptionE_2 (TF graph quirk)."""

    def __init__(self, cin: int, pool: str, *, rngs: nnx.Rngs):
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = jnp.concatenate([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], axis=-1)
        pooled = avg_pool_exclude_pad(x) if self.pool == "avg" else max_pool(x, 1, padding=1)
        return jnp.concatenate([self.branch1x1(x), b3, d, self.branch_pool(pooled)], axis=-1)


class InceptionV3(nnx.Module):
    """``x [N, 299, 299, 3] float in [−1, 1] (see :func:`preprocess`) -> pool3 features [N, 2048]``."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
        self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_shape(x, (None, INPUT_SIZE, INPUT_SIZE, 3))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x.astype(jnp.float32))))
        x = max_pool(x, 2)
        x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return jnp.mean(x, axis=(1, 2))  # [N, 2048]


# --------------------------------------------------------------------------------------------
# Conversion and loading.

_TORCH_NAMES = {"conv.kernel": "conv.weight", "bn.scale": "bn.weight", "bn.bias": "bn.bias"}
_TORCH_NAMES |= {"bn.mean": "bn.running_mean", "bn.var": "bn.running_var"}


def inception_rules(paths: Sequence[str]) -> list[Rule]:
    """Our dotted parameter paths map 1:1 onto the torch keys (same module names)."""
    rules = []
    for path in paths:
        module, _, leaf = path.rpartition(".")
        block, _, last = module.rpartition(".")
        torch_key = f"{block}.{_TORCH_NAMES[f'{last}.{leaf}']}"
        rules.append(Rule.one(path, torch_key, conv2d if leaf == "kernel" else identity))
    return rules


def convert_inception(state_dict: Mapping[str, np.ndarray]) -> InceptionV3:
    """pytorch-fid ``fid_inception_v3`` / torch-fidelity ``FeatureExtractorInceptionV3`` state dict →
    :class:`InceptionV3` (``fc.*`` and ``num_batches_tracked`` are ignored). Raises one
    :class:`~stiv_jax.weights.torch_state.ConversionError` naming every bad key."""
    abstract = nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0)))
    rules = inception_rules(sorted(param_shapes(abstract)))
    ignore = (r"^fc\.", r"num_batches_tracked$", r"^AuxLogits\.")
    return convert(state_dict, abstract, rules, ignore=ignore, what="FID InceptionV3")


def load_inception(path: str) -> InceptionV3:
    """Reads the FID weights (``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth``; .pt/.pth/.safetensors) → :class:`InceptionV3`."""
    return convert_inception(load_state_dict(path))


# --------------------------------------------------------------------------------------------
# Preprocessing.


def resize_bilinear_tf1(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """TF 1.x ``ResizeBilinear(align_corners=False)`` of ``[N, H, W, C]`` (torch-fidelity's "slow",
    CPU bit-exact variant): source coordinate ``dst · (in / out)`` in float32, edge-clamped."""

    def axis(n_in: int, n_out: int):
        pos = jnp.arange(n_out, dtype=jnp.float32) * jnp.float32(n_in / n_out)
        lo = pos.astype(jnp.int32)
        return lo, jnp.minimum(lo + 1, n_in - 1), pos - lo.astype(jnp.float32)

    (y0, y1, dy), (x0, x1, dx) = axis(x.shape[1], size[0]), axis(x.shape[2], size[1])
    top, bottom = x[:, y0], x[:, y1]
    dx = dx[None, None, :, None]
    row0 = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * dx
    row1 = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * dx
    return row0 + (row1 - row0) * dy[None, :, None, None]


def preprocess(frames: jax.Array, resize: str = "tf1") -> jax.Array:
    """``uint8 [N, H, W, 3] -> float32 [N, 299, 299, 3]`` in [−1, 1], per ``resize`` (module docstring)."""
    chex.assert_rank(frames, 4)
    chex.assert_axis_dimension(frames, 3, 3)
    n, h, w, c = frames.shape
    x = frames.astype(jnp.float32)
    if resize == "tf1":
        if (h, w) != (INPUT_SIZE, INPUT_SIZE):
            x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
        return (x - 128.0) / 128.0
    if resize == "pytorch-fid":
        x = x / 255.0
        if (h, w) != (INPUT_SIZE, INPUT_SIZE):
            x = jax.image.resize(x, (n, INPUT_SIZE, INPUT_SIZE, c), method="linear", antialias=False)
        return 2.0 * x - 1.0
    raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
