"""A small pure-JAX stand-in for the STIV DiT, for sampler tests and benchmarks.

Same call convention as the DiT (the DiT's): ``apply(params, x, t, cond) -> v`` with x
[B, T, h, w, C], t [B], cond = {text, text_mask, pooled_text, micro, cond_mask}. Every input
matters: each latent pixel is a token; time, pooled text and micro-conditions are added to all
tokens, a per-frame indicator to tokens of given frames (``cond_mask``), then ``depth`` blocks of
full self-attention over all tokens (so frames talk to each other), masked cross-attention to the
text and an MLP. Not a generative model; only its cost and input-dependence are DiT-like.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.model.micro import MICRO_FIELDS


def _dense(rng: np.random.Generator, d_in: int, d_out: int) -> jax.Array:
    return jnp.asarray(rng.standard_normal((d_in, d_out)) / math.sqrt(d_in), jnp.float32)


HEAD_DIM = 16


def init(seed: int, *, channels: int, text_dim: int, width: int = 64, depth: int = 2) -> dict:
    """Random parameters (a pytree of float32 arrays); heads = width / 16.

    Drawn with NumPy: a stand-in needs no JAX PRNG, and this avoids compiling its init.
    """
    if width % HEAD_DIM:
        raise ValueError(f"width={width} must be a multiple of the head dim {HEAD_DIM}")
    rng = np.random.default_rng(seed)
    blocks = [
        {
            name: _dense(rng, d_in, d_out)
            for name, d_in, d_out in (
                ("qkv", width, 3 * width),
                ("attn_out", width, width),
                ("q", width, width),
                ("kv", text_dim, 2 * width),
                ("mlp_in", width, 4 * width),
                ("mlp_out", 4 * width, width),
            )
        }
        for _ in range(depth)
    ]
    return {
        "embed": _dense(rng, channels, width),
        "time": _dense(rng, 32, width),
        "pooled": _dense(rng, text_dim, width),
        "micro": _dense(rng, len(MICRO_FIELDS), width),
        "frame_cond": jnp.asarray(0.5 * rng.standard_normal(width), jnp.float32),
        "out": _dense(rng, width, channels),
        "blocks": blocks,
    }


def _ln(x):
    mean = jnp.mean(x, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(jnp.var(x, -1, keepdims=True) + 1e-6)


def _attend(q, k, v, mask=None):
    split = lambda a: a.reshape(*a.shape[:2], -1, HEAD_DIM)
    out = jax.nn.dot_product_attention(split(q), split(k), split(v), mask=mask)
    return out.reshape(q.shape)


def apply(params: dict, x: jax.Array, t: jax.Array, cond: dict) -> jax.Array:
    """Velocity [B, T, h, w, C] for latents ``x`` at times ``t`` [B]."""
    batch, frames, height, width_, channels = x.shape
    tokens = x.reshape(batch, frames, height * width_, channels) @ params["embed"]
    cond_mask = cond.get("cond_mask")
    if cond_mask is not None:
        tokens = tokens + cond_mask[:, :, None, None] * params["frame_cond"]
    freqs = jnp.exp(-math.log(1e4) * jnp.arange(16) / 16)
    t_emb = jnp.concatenate([jnp.sin(1e3 * t[:, None] * freqs), jnp.cos(1e3 * t[:, None] * freqs)], -1)
    global_emb = (
        t_emb @ params["time"] + cond["pooled_text"] @ params["pooled"] + jnp.log1p(cond["micro"]) @ params["micro"]
    )
    h = (tokens + global_emb[:, None, None]).reshape(batch, -1, tokens.shape[-1])
    text_mask = cond["text_mask"][:, None, None, :]
    for blk in params["blocks"]:
        q, k, v = jnp.split(_ln(h) @ blk["qkv"], 3, axis=-1)
        h = h + _attend(q, k, v) @ blk["attn_out"]
        k, v = jnp.split(cond["text"] @ blk["kv"], 2, axis=-1)
        h = h + _attend(_ln(h) @ blk["q"], k, v, mask=text_mask)
        h = h + jax.nn.gelu(_ln(h) @ blk["mlp_in"]) @ blk["mlp_out"]
    return (_ln(h) @ params["out"]).reshape(x.shape)


def example_conditions(seed: int, batch: int, *, text_len: int = 6, text_dim: int = 16) -> tuple[dict, dict]:
    """Random (cond, null_cond) text leaves: prompts of varying length and a 1-token null prompt.

    ``micro`` is left to the caller (``tasks.default_micro``); the null prompt has batch dim 1.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, text_len + 1, (batch,))
    null_text = rng.standard_normal((1, text_len, text_dim))
    cond = {
        "text": rng.standard_normal((batch, text_len, text_dim)),
        "text_mask": np.arange(text_len)[None] < lengths[:, None],
        "pooled_text": rng.standard_normal((batch, text_dim)),
    }
    null_cond = {
        "text": null_text,
        "text_mask": np.arange(text_len)[None] < 1,
        "pooled_text": null_text[:, 0],
    }
    as_jax = lambda a: jnp.asarray(a, jnp.float32 if a.dtype.kind == "f" else a.dtype)
    return jax.tree.map(as_jax, cond), jax.tree.map(as_jax, null_cond)
