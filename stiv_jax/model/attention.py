"""Multi-head attention with QK RMSNorm and RoPE (§2.1, Fig. 3).

One module serves spatial self-attention (2D RoPE), temporal self-attention (1D RoPE, non-causal)
and cross-attention to text tokens (no RoPE, text padding mask). The attention op itself is
:func:`~stiv_jax.model.softmax_attention.softmax_attention` (plain XLA, any backend), ``jax.nn.dot_product_attention`` with cuDNN
flash attention on GPU, or the Pallas splash kernel on TPU (stiv_jax/model/splash.py), by
``model.attention_impl``; all take ``[batch, seq, heads, head_dim]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from stiv_jax.model.layers import RMSNorm, dense
from stiv_jax.model.rope import apply_rope
from stiv_jax.model.softmax_attention import softmax_attention
from stiv_jax.model.splash import splash_attention
from stiv_jax.parallel.rules import constrain


def attention_op(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, impl: str) -> jax.Array:
    """Softmax attention on ``[N, S, H, D]`` inputs; ``mask`` (True = attend) broadcasts to [N,H,Sq,Sk]."""
    if impl == "splash":
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
