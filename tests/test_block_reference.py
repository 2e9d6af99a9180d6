"""The factorised STIV block equals an explicit plain-einsum computation of §2.1's equations:
spatial attention within each frame, temporal attention across frames at each position,
cross-attention with the text padding mask, sandwich norms and AdaLN modulation."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.model.block import STIVBlock
from stiv_jax.model.config import resolve
from stiv_jax.model.rope import rope_1d, rope_2d
from tests.model_utils import tiny_config


def ln(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)


def rms(x, scale):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * scale


def rot(x, cos, sin):
    x1, x2 = np.split(x, 2, axis=-1)
    return x * cos + np.concatenate([-x2, x1], -1) * sin


def lin(p, x):
    return x @ np.asarray(p.kernel[...]) + np.asarray(p.bias[...])


def attention(p, xq, xkv, heads, pattern, rope_q=None, rope_k=None, mask=None):
    """Explicit multi-head attention; ``pattern`` names the einsum over query/key axes."""

    def split(a):
        return a.reshape(*a.shape[:-1], heads, a.shape[-1] // heads)

    q = rms(split(lin(p.q, xq)), np.asarray(p.q_norm.scale[...]))
    k = rms(split(lin(p.k, xkv)), np.asarray(p.k_norm.scale[...]))
    v = split(lin(p.v, xkv))
    if rope_q is not None:
        q, k = rot(q, *rope_q), rot(k, *rope_k)
    qs, ks, out = pattern
    logits = np.einsum(f"{qs},{ks}->{out}", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -1e30)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return w, v


def test_block_matches_einsum_reference():
    cfg = resolve(tiny_config())
    block = STIVBlock(cfg, rngs=nnx.Rngs(params=0))
    state = nnx.state(block, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    nnx.update(block, jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]))

    b, tt, gh, gw, d, L, H = 2, 3, 2, 3, cfg.hidden_size, 4, cfg.num_heads
    s, hd = gh * gw, d // H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, tt, s, d)).astype(np.float32)
    mod = rng.standard_normal((b, 6, d)).astype(np.float32) * 0.3
    text = rng.standard_normal((b, L, d)).astype(np.float32)
    text_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    s_cos, s_sin = rope_2d(gh, gw, hd)
    t_cos, t_sin = rope_1d(tt, hd)

    got = block(
        jnp.asarray(x),
        jnp.asarray(mod),
        jnp.asarray(text),
        jnp.asarray(text_mask),
        (jnp.asarray(s_cos)[None, None, :, None], jnp.asarray(s_sin)[None, None, :, None]),
        (jnp.asarray(t_cos)[:, None], jnp.asarray(t_sin)[:, None]),
    )

    m = mod + np.asarray(block.modulation[...])[None]
    sh_a, sc_a, g_a, sh_m, sc_m, g_m = (m[:, i][:, None, None] for i in range(6))
    # (1) spatial: queries and keys share the frame t
    h = ln(x) * (1 + sc_a) + sh_a
    sr = (s_cos[None, None, :, None], s_sin[None, None, :, None])
    w, v = attention(block.spatial_attn, h, h, H, ("btqhd", "btkhd", "bthqk"), sr, sr)
    o = np.einsum("bthqk,btkhd->btqhd", w, v).reshape(b, tt, s, d)
    x1 = x + g_a * ln(lin(block.spatial_attn.out, o))
    # (2) temporal: queries and keys share the position s
    h = ln(x1)
    tr = (t_cos[None, :, None, None], t_sin[None, :, None, None])
    w, v = attention(block.temporal_attn, h, h, H, ("bqshd", "bkshd", "bshqk"), tr, tr)
    o = np.einsum("bshqk,bkshd->bqshd", w, v).reshape(b, tt, s, d)
    x2 = x1 + ln(lin(block.temporal_attn.out, o))
    # (3) cross-attention over all tokens of the video, padded text tokens masked
    h = ln(x2).reshape(b, tt * s, d)
    w, v = attention(block.cross_attn, h, text, H, ("bqhd", "bkhd", "bhqk"), mask=text_mask[:, None, None, :])
    o = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, tt * s, d)
    x3 = x2 + lin(block.cross_attn.out, o).reshape(b, tt, s, d)
    # (4) MLP
    h = ln(x3) * (1 + sc_m) + sh_m
    f = lin(block.mlp.fc2, jax.nn.gelu(lin(block.mlp.fc1, h), approximate=True))
    want = x3 + g_m * ln(np.asarray(f))

    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)
