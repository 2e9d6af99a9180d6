"""Small building blocks shared by the STIV modules: dense layers with logical axis names,
stateless LayerNorm, RMSNorm (QK-norm), the GELU MLP and sinusoidal embeddings.

All normalisations run in float32 whatever the compute dtype (App. D stability tricks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = Sequence[str | None]


def dense(
    din: int,
    dout: int,
    axes: Axes,
    *,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    zero_init: bool = False,
    std: float | None = None,
    use_bias: bool = True,
) -> nnx.Linear:
    """``nnx.Linear`` whose kernel/bias carry logical axis names ``axes`` (in, out).

    Init: Xavier-uniform (PixArt-α), N(0, std) when ``std`` is given, zeros when ``zero_init``.
    """
    if zero_init:
        init = nnx.initializers.zeros_init()
    elif std is not None:
        init = nnx.initializers.normal(std)
    else:
        init = nnx.initializers.xavier_uniform()
    return nnx.Linear(
        din,
        dout,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(init, tuple(axes)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[-1],)),
        rngs=rngs,
    )


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Stateless LayerNorm (no scale/shift), computed in float32, returned in ``x.dtype``."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm with a learned scale, used on queries and keys (QK-norm, §2.1 / Fig. 3)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class MLP(nnx.Module):
    """Linear → GELU(tanh) → Linear (PixArt-α FFN)."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), **kw)
        self.fc2 = dense(hidden, dim, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


def sinusoidal_embedding(x: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """``[..., ] -> [..., dim]`` features ``[cos(x·f), sin(x·f)]`` with geometric frequencies."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """AdaLN modulation ``x·(1 + scale) + shift`` (DiT/PixArt form of §2.1's scale·x + shift)."""
    return x * (1 + scale) + shift
