"""The head-major XLA attention (model/attention.py) equals jax.nn.dot_product_attention in
value and gradient, with and without a key mask, and under remat its backward pass reuses the
saved probabilities instead of recomputing QKᵀ and the softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.model.dit import remat_policy
from stiv_jax.model.softmax_attention import ATTENTION_PROBS, softmax_attention


def _inputs(seed=0, n=2, s=12, l=7, h=3, d=8):  # noqa: E741 - l: key length, as in the shapes
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (n, s, h, d))
    k = jax.random.normal(kk, (n, l, h, d))
    v = jax.random.normal(kv, (n, l, h, d))
    mask = (jnp.arange(l)[None, :] < jnp.array([[3], [7]]))[:, None, None, :]  # [N, 1, 1, L]
    return q, k, v, mask


@pytest.mark.parametrize("masked,head_dim", [(False, 8), (True, 8), (True, 16)])
def test_matches_jax_dot_product_attention(masked, head_dim):
    """head_dim 16: the scale (1/4) is folded into q; 8: applied to the logits."""
    q, k, v, mask = _inputs(d=head_dim)
    mask = mask if masked else None
    w = jax.random.normal(jax.random.key(9), q.shape)
    ours = lambda q, k, v: jnp.sum(w * softmax_attention(q, k, v, mask))
    ref = lambda q, k, v: jnp.sum(w * jax.nn.dot_product_attention(q, k, v, mask=mask))
    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
    for g, r in zip(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_remat_dots_saves_probabilities_not_logits():
    q, k, v, _ = _inputs()
    f = jax.checkpoint(lambda q, k, v: jnp.sum(softmax_attention(q, k, v, None) ** 2), policy=remat_policy("dots"))
    jaxpr = jax.make_jaxpr(jax.grad(f, (0, 1, 2)))(q, k, v)
    text = str(jaxpr)
    assert text.count(" exp ") == 1  # one softmax: forward only, nothing recomputed
    assert ATTENTION_PROBS in text
