"""Pieces shared by the CLIP and T5 text encoders: named dense layers, multi-head self-attention,
and scanned layer stacks.

Every parameter carries logical axis names (stiv_jax/parallel/rules.py), so the frozen encoders
shard like the DiT (FSDP over ``embed``, tensor parallelism over ``heads``/``mlp``). Blocks are
created with ``nnx.vmap`` (a leading ``layers`` axis) and applied with ``nnx.scan``, so a 32-layer
bigG compiles one block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stiv_jax.model import layers as model_layers

Axes = Sequence[str | None]


def dense(
    din: int,
    dout: int,
    axes: Axes,
    *,
    rngs: nnx.Rngs,
    use_bias: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> nnx.Linear:
    """``nnx.Linear`` with logical axis names ``axes = (in, out)`` and N(0, 0.02) init (the text
    encoders are loaded from checkpoints; their init matters only for random toy encoders)."""
    return model_layers.dense(
        din, dout, axes, rngs=rngs, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, std=0.02
    )


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}
# Hugging Face ``hidden_act`` / ``dense_act_fn`` names → ours.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
}


def hf_activation(name: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def layer_norm(dim: int, eps: float, *, rngs: nnx.Rngs, param_dtype=jnp.float32) -> nnx.LayerNorm:
    """Affine LayerNorm computed in float32 (output float32; the next layer casts)."""
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=jnp.float32,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """T5's LayerNorm: ``scale · x / sqrt(mean(x²) + eps)``, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return y * self.scale[...].astype(jnp.float32)


def embedding(num: int, dim: int, axes: Axes, *, rngs: nnx.Rngs, param_dtype=jnp.float32) -> nnx.Embed:
    return nnx.Embed(
        num,
        dim,
        param_dtype=param_dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), tuple(axes)),
        rngs=rngs,
    )


class SelfAttention(nnx.Module):
    """Multi-head self-attention, ``[B, L, D] -> [B, L, D]``, through ``jax.nn.dot_product_attention``.

    CLIP: biased projections, scale ``head_dim**-0.5``, causal. T5: no biases, ``scale=1`` (the
    scale is folded into the weights) and an additive relative-position ``bias``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        *,
        rngs: nnx.Rngs,
        use_bias: bool,
        scale: float | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = head_dim**-0.5 if scale is None else scale
        inner = num_heads * head_dim
        kw = dict(rngs=rngs, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype)
        self.q = dense(dim, inner, ("embed", "heads"), **kw)
        self.k = dense(dim, inner, ("embed", "heads"), **kw)
        self.v = dense(dim, inner, ("embed", "heads"), **kw)
        self.out = dense(inner, dim, ("heads", "embed"), **kw)

    def __call__(self, x: jax.Array, *, mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """``mask`` (True = attend) and ``bias`` broadcast to ``[B, heads, L, L]``."""
        b, length, _ = x.shape
        split = lambda t: t.reshape(b, length, self.num_heads, self.head_dim)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if bias is not None:
            bias = bias.astype(q.dtype)
        o = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=self.scale)
        return self.out(o.reshape(b, length, self.num_heads * self.head_dim))


def stacked(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """``num_layers`` independently initialised copies of a block, stacked on a ``layers`` axis."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(r: nnx.Rngs) -> nnx.Module:
        return make_layer(r)

    return make(rngs)


def run_stacked(layers: nnx.Module, x: jax.Array, apply: Callable[[nnx.Module, jax.Array], jax.Array]) -> jax.Array:
    """Scans ``apply(layer, x) -> x`` over the stacked ``layers``."""

    def body(h, layer):
        return apply(layer, h), None

    scan = nnx.scan(
        body, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0), transform_metadata={nnx.PARTITION_NAME: "layers"}
    )
    h, _ = scan(x, layers)
    return h
