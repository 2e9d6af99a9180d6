"""Multi-head attention with QK RMSNorm and RoPE (§2.1, Fig. 3).

One module serves spatial self-attention (2D RoPE), temporal self-attention (1D RoPE, non-causal)
and cross-attention to text tokens (no RoPE, text padding mask). The attention op itself is
:func:`softmax_attention` (plain XLA, any backend), ``jax.nn.dot_product_attention`` with cuDNN
flash attention on GPU, or the Pallas splash kernel on TPU (stiv_jax/model/splash.py), by
``model.attention_impl``; all take ``[batch, seq, heads, head_dim]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from stiv_jax.model.layers import RMSNorm, dense
from stiv_jax.model.rope import apply_rope
from stiv_jax.parallel.rules import constrain


ATTENTION_PROBS = "attention_probs"


@jax.custom_vjp
def _softmax(logits: jax.Array) -> jax.Array:
    """Softmax over the last axis. Its backward pass reads only the probabilities, tagged
    :data:`ATTENTION_PROBS` (a remat policy that saves the name then recomputes nothing)."""
    return jax.nn.softmax(logits, axis=-1)


def _softmax_fwd(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    probs = checkpoint_name(jax.nn.softmax(logits, axis=-1), ATTENTION_PROBS)
    return probs, probs


def _softmax_bwd(probs: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (probs * (g - jnp.sum(probs * g, axis=-1, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Plain softmax attention on ``[N, S, H, D]`` (the ``xla`` implementation).

    The maths of ``jax.nn.dot_product_attention(implementation='xla')``, written head-major
    without its per-head ``vmap``; the probabilities are tagged :data:`ATTENTION_PROBS` so a
    remat policy can keep them, sparing the backward pass a second QKᵀ and softmax. On CPU
    (stiv-bench, remat 'dots') this made the train step 1.08× faster than
    ``jax.nn.dot_product_attention``. The 1/√D scale is folded into ``q`` when that is exact (D a
    power of 4, e.g. 64: the scale is a power of two), else applied to the float32 logits as
    ``jax.nn.dot_product_attention`` does, so the numerics match it up to float rounding.
    """
    scale = q.shape[-1] ** -0.5
    exact = math.log2(scale).is_integer()
    if exact:
        q = q * jnp.asarray(scale, q.dtype)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32)
    if not exact:
        logits = logits * jnp.float32(scale)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jnp.einsum("nhqk,nkhd->nqhd", _softmax(logits).astype(v.dtype), v)


def attention_op(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, impl: str) -> jax.Array:
    """Softmax attention on ``[N, S, H, D]`` inputs; ``mask`` (True = attend) broadcasts to [N,H,Sq,Sk]."""
    if impl == "splash":
        from stiv_jax.model.splash import splash_attention

        return splash_attention(q, k, v, mask)
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    return softmax_attention(q, k, v, mask)


class Attention(nnx.Module):
    """Q/K/V projections, QK-norm, optional RoPE, attention op, output projection.

    ``zero_out`` zero-initialises the output projection (temporal and cross-attention), so a
    freshly added branch is an exact identity (T2I→T2V inflation, §2.4).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        rngs: nnx.Rngs,
        kv_dim: int | None = None,
        zero_out: bool = False,
        impl: str = "xla",
        eps: float = 1e-6,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = impl
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q = dense(dim, dim, ("embed", "heads"), **kw)
        self.k = dense(kv_dim or dim, dim, ("embed", "heads"), **kw)
        self.v = dense(kv_dim or dim, dim, ("embed", "heads"), **kw)
        self.q_norm = RMSNorm(self.head_dim, eps=eps, param_dtype=param_dtype)
        self.k_norm = RMSNorm(self.head_dim, eps=eps, param_dtype=param_dtype)
        self.out = dense(dim, dim, ("heads", "embed"), zero_init=zero_out, **kw)

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        rope: tuple[jax.Array, jax.Array] | None = None,
        mask: jax.Array | None = None,
        name: str | None = None,
    ) -> jax.Array:
        """``x [..., S, dim]`` (leading dims are folded into the attention batch).

        ``rope`` tables broadcast to ``[..., S, 1, head_dim]``; ``context`` (cross-attention)
        is ``[N, L, kv_dim]`` with ``mask [N, 1, 1, L]``; ``name`` tags the output for remat.
        """
        context = x if context is None else context
        q = self.q_norm(self._heads(self.q(x)))
        k = self.k_norm(self._heads(self.k(context)))
        v = self._heads(self.v(context))
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        lead = q.shape[:-3]
        fold = lambda a: a.reshape(-1, *a.shape[-3:])
        q, k, v = (constrain(fold(a), ("batch", "length", "act_heads", None)) for a in (q, k, v))
        o = attention_op(q, k, v, mask, self.impl)
        o = o.reshape(*lead, o.shape[-3], self.num_heads * self.head_dim)
        if name is not None:
            o = checkpoint_name(o, name)
        return self.out(o)
