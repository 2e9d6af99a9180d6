"""The Pallas splash kernel (run by Pallas' interpreter on CPU) matches XLA attention, forward and
backward, with and without a key padding mask, on one device and inside a sharded model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from stiv_jax.model import splash
from stiv_jax.model.config import get_model_config
from stiv_jax.model.dit import STIV
from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.parallel.rules import axis_rules


def _qkv(n=2, sq=256, sk=128, h=2, d=32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(ks[0], (n, sq, h, d)),
        jax.random.normal(ks[1], (n, sk, h, d)),
        jax.random.normal(ks[2], (n, sk, h, d)),
    )


@pytest.mark.parametrize("padded", [False, True])
def test_splash_matches_xla_forward_and_backward(padded):
    q, k, v = _qkv()
    mask = None
    if padded:  # clip 0 attends to its first 40 keys, clip 1 to all
        valid = jnp.arange(128)[None, :] < jnp.array([[40], [128]])
        mask = valid[:, None, None, :]

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v, mask=mask)))

    ref = jax.nn.dot_product_attention(q, k, v, mask=mask)
    out = splash.splash_attention(q, k, v, mask, interpret=True)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)
    g_ref = jax.grad(lambda *a: loss(jax.nn.dot_product_attention, *a), argnums=(0, 1, 2))(q, k, v)
    g = jax.grad(
        lambda *a: loss(lambda *b, mask: splash.splash_attention(*b, mask, interpret=True), *a), argnums=(0, 1, 2)
    )(q, k, v)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


def test_untileable_lengths_fall_back_to_xla():
    q, k, v = _qkv(sq=10, sk=10)
    assert not splash.supported(10, 10)
    np.testing.assert_allclose(
        splash.splash_attention(q, k, v, interpret=True), jax.nn.dot_product_attention(q, k, v), atol=1e-6
    )
    with pytest.raises(ValueError, match="key padding mask"):
        splash.splash_attention(*_qkv(), jnp.ones((2, 2, 256, 128), bool), interpret=True)


def test_sharded_dit_with_splash_matches_xla():
    """A DiT whose spatial attention tiles (16×16 tokens per frame) gives the same output with
    ``attention_impl='splash'`` under an 8-device mesh (batch over fsdp, heads over tensor)."""
    kw = dict(num_layers=1, hidden_size=64, num_heads=2, num_decoder_blocks=0, text_dim=16, rope_ref_grid=(2, 16, 16))
    xla = STIV(get_model_config("tiny", **kw), rngs=nnx.Rngs(0))
    spl = STIV(get_model_config("tiny", attention_impl="splash", **kw), rngs=nnx.Rngs(0))
    nnx.update(spl, nnx.state(xla))
    b = 4
    ks = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(ks[0], (b, 2, 32, 32, 4))
    args = dict(
        text=jax.random.normal(ks[1], (b, 128, 16)),
        text_mask=jnp.arange(128)[None] < jnp.array([[5], [128], [60], [1]]),
        pooled_text=jax.random.normal(ks[2], (b, 16)),
        micro=jnp.ones((b, 6)),
    )
    t = jnp.linspace(0.1, 0.9, b)
    want = xla(x, t, **args)
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2)), jax.devices()[:8])
    with jax.set_mesh(mesh), axis_rules(None):
        got = nnx.jit(lambda m, *a: m(*a, **args))(spl, x, t)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)
