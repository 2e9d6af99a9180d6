"""AutoencoderKL (the Stable Diffusion VAE) in Flax NNX, channels-last, per frame.

STIV encodes each frame separately with a frozen 2D VAE (paper §3.1 / App. B: ``sd-vae-ft-ema``,
4 latent channels, 8× spatial; later an internal 8-channel VAE), so videos get no temporal
compression. The layout follows diffusers' ``AutoencoderKL`` (Encoder/Decoder of ResNet blocks,
a mid-block with single-head self-attention, optional 1×1 ``quant_conv``/``post_quant_conv``), so
its weights convert 1:1 (stiv_jax/vae/convert.py). Numerics match diffusers: GroupNorm eps 1e-6,
asymmetric ``(0, 1)`` padding before each stride-2 downsampling conv, nearest-neighbour 2×
upsampling, log-variance clamped to [-30, 20].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.weights.config import PretrainedConfig

_SD = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig(PretrainedConfig):
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"

    HF_MARKERS = ("down_block_types", "_class_name")
    PRESETS = {
        "sd-vae-ft-ema": dict(_SD),  # stabilityai/sd-vae-ft-ema (STIV's baseline VAE)
        "sd3-vae": dict(
            _SD,
            latent_channels=16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        "flux-vae": dict(
            _SD,
            latent_channels=16,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
    }

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> AutoencoderKLConfig:
        """From a diffusers ``AutoencoderKL`` config.json."""
        for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            got = set(hf.get(key, [want]))
            if got != {want}:
                raise ValueError(f"unsupported {key} {sorted(got)}; only {want} is implemented")
        if hf.get("act_fn", "silu") != "silu":
            raise ValueError(f"unsupported act_fn {hf['act_fn']!r}; only silu is implemented")
        if hf.get("latents_mean") is not None:
            raise ValueError("per-channel latents_mean/latents_std normalisation is not supported")
        return cls(
            in_channels=hf.get("in_channels", 3),
            out_channels=hf.get("out_channels", 3),
            block_out_channels=tuple(hf["block_out_channels"]),
            layers_per_block=hf.get("layers_per_block", 1),
            latent_channels=hf.get("latent_channels", 4),
            norm_num_groups=hf.get("norm_num_groups", 32),
            scaling_factor=hf.get("scaling_factor", 0.18215),
            shift_factor=hf.get("shift_factor") or 0.0,
            use_quant_conv=hf.get("use_quant_conv", True),
            use_post_quant_conv=hf.get("use_post_quant_conv", True),
            mid_block_add_attention=hf.get("mid_block_add_attention", True),
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def _conv(
    cin: int, cout: int, k: int, cfg: AutoencoderKLConfig, rngs: nnx.Rngs, *, stride: int = 1, padding: Any = None
) -> nnx.Conv:
    pad = ((k // 2, k // 2),) * 2 if padding is None else padding
    return nnx.Conv(
        cin, cout, (k, k), strides=stride, padding=pad,
        dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("conv_out",)),
        rngs=rngs,
    )  # fmt: skip


def _norm(c: int, cfg: AutoencoderKLConfig, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(
        c, num_groups=cfg.norm_num_groups, epsilon=1e-6, dtype=jnp.float32, param_dtype=cfg.params_dtype,
        use_fast_variance=False,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )  # fmt: skip


class ResnetBlock(nnx.Module):
    """GroupNorm → SiLU → conv3×3, twice, plus a (1×1-projected when widths differ) shortcut."""

    def __init__(self, cin: int, cout: int, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        self.norm1, self.conv1 = _norm(cin, cfg, rngs), _conv(cin, cout, 3, cfg, rngs)
        self.norm2, self.conv2 = _norm(cout, cfg, rngs), _conv(cout, cout, 3, cfg, rngs)
        self.shortcut = _conv(cin, cout, 1, cfg, rngs) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class Attention(nnx.Module):
    """Single-head self-attention over all H·W positions with a pre-GroupNorm and a residual."""

    def __init__(self, c: int, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        self.norm = _norm(c, cfg, rngs)
        self.q, self.k, self.v, self.out = (_conv(c, c, 1, cfg, rngs) for _ in range(4))

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        y = self.norm(x)
        q, k, v = (p(y).reshape(n, h * w, 1, c) for p in (self.q, self.k, self.v))
        o = jax.nn.dot_product_attention(q, k, v).reshape(n, h, w, c)
        return x + self.out(o)


class MidBlock(nnx.Module):
    def __init__(self, c: int, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock(c, c, cfg, rngs), ResnetBlock(c, c, cfg, rngs)])
        self.attention = Attention(c, cfg, rngs) if cfg.mid_block_add_attention else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if self.attention is not None:
            x = self.attention(x)
        return self.resnets[1](x)


class Stage(nnx.Module):
    """ResNet blocks at one resolution, then an optional stride-2 down- or 2× up-sampling conv."""

    def __init__(self, cin: int, cout: int, num: int, resample: str | None, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, cfg, rngs) for i in range(num)])
        self.resample = resample
        if resample == "down":  # diffusers pads (0, 1) on the bottom/right, then a VALID stride-2 conv
            self.conv = _conv(cout, cout, 3, cfg, rngs, stride=2, padding=((0, 1), (0, 1)))
        elif resample == "up":
            self.conv = _conv(cout, cout, 3, cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.resnets:
            x = block(x)
        if self.resample == "up":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return x if self.resample is None else self.conv(x)


class Encoder(nnx.Module):
    def __init__(self, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        ch, n = cfg.block_out_channels, len(cfg.block_out_channels)
        self.conv_in = _conv(cfg.in_channels, ch[0], 3, cfg, rngs)
        self.down_blocks = nnx.List(
            [
                Stage(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, "down" if i < n - 1 else None, cfg, rngs)
                for i in range(n)
            ]
        )
        self.mid = MidBlock(ch[-1], cfg, rngs)
        self.norm_out = _norm(ch[-1], cfg, rngs)
        self.conv_out = _conv(ch[-1], 2 * cfg.latent_channels, 3, cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for stage in self.down_blocks:
            x = stage(x)
        return self.conv_out(jax.nn.silu(self.norm_out(self.mid(x))))


class Decoder(nnx.Module):
    def __init__(self, cfg: AutoencoderKLConfig, rngs: nnx.Rngs):
        ch, n = cfg.block_out_channels[::-1], len(cfg.block_out_channels)
        self.conv_in = _conv(cfg.latent_channels, ch[0], 3, cfg, rngs)
        self.mid = MidBlock(ch[0], cfg, rngs)
        self.up_blocks = nnx.List(
            [
                Stage(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, "up" if i < n - 1 else None, cfg, rngs)
                for i in range(n)
            ]
        )
        self.norm_out = _norm(ch[-1], cfg, rngs)
        self.conv_out = _conv(ch[-1], cfg.out_channels, 3, cfg, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid(self.conv_in(z))
        for stage in self.up_blocks:
            x = stage(x)
        return self.conv_out(jax.nn.silu(self.norm_out(x)))


class AutoencoderKL(nnx.Module):
    """Images ``[N, H, W, C]`` in [-1, 1] ↔ unscaled latents ``[N, H/f, W/f, latent_channels]``.

    Scaling/shift factors and the frames/chunking interface live in stiv_jax/vae/frames.py.
    """

    def __init__(self, cfg: AutoencoderKLConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.encoder, self.decoder = Encoder(cfg, rngs), Decoder(cfg, rngs)
        c = cfg.latent_channels
        self.quant_conv = _conv(2 * c, 2 * c, 1, cfg, rngs) if cfg.use_quant_conv else None
        self.post_quant_conv = _conv(c, c, 1, cfg, rngs) if cfg.use_post_quant_conv else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Posterior moments ``(mean, logvar)``, each ``[N, H/f, W/f, latent_channels]``."""
        chex.assert_rank(x, 4)
        f = self.config.downsample
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"image size {x.shape[1]}x{x.shape[2]} is not divisible by the VAE factor {f}")
        moments = self.encoder(x.astype(self.config.compute_dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents ``[N, h, w, latent_channels]`` → images ``[N, h·f, w·f, out_channels]``."""
        chex.assert_rank(z, 4)
        z = z.astype(self.config.compute_dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)
