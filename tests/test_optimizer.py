"""AdaFactor (paper settings) and EMA against a hand-written numpy reference (issue: training)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.train.optimizer import learning_rate_schedule, make_optimizer
from stiv_jax.train.step import ema_update
from tests.train_utils import tiny_train_config


def _reference_adafactor(params, grads_seq, *, lr_fn, b1, b2, eps, clip_norm, update_clip):
    """Adafactor (Shazeer & Stern 2018) with constant β2, factored second moments for matrices,
    global-norm gradient clipping, update-RMS clipping, lr scaling and undebiased momentum."""
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    vr = {k: np.zeros(v.shape[1]) for k, v in p.items() if v.ndim == 2}
    vc = {k: np.zeros(v.shape[0]) for k, v in p.items() if v.ndim == 2}
    vv = {k: np.zeros_like(v) for k, v in p.items() if v.ndim != 2}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    for step, grads in enumerate(grads_seq):
        g = {k: v.astype(np.float64) for k, v in grads.items()}
        norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
        g = {k: x * min(1.0, clip_norm / norm) for k, x in g.items()}
        for k, x in g.items():
            sq = x**2 + eps
            if x.ndim == 2:  # factored: per-column and per-row means of g², V ≈ r·c / mean(r)
                vr[k] = b2 * vr[k] + (1 - b2) * sq.mean(axis=0)
                vc[k] = b2 * vc[k] + (1 - b2) * sq.mean(axis=1)
                u = x / np.sqrt(vr[k] / vr[k].mean())[None, :] / np.sqrt(vc[k])[:, None]
            else:
                vv[k] = b2 * vv[k] + (1 - b2) * sq
                u = x / np.sqrt(vv[k])
            u = u / max(1.0, np.sqrt(np.mean(u**2)) / update_clip)
            m[k] = b1 * m[k] + (1 - b1) * (-lr_fn(step) * u)
            p[k] = p[k] + m[k]
    return p


def test_adafactor_matches_reference_update():
    cfg = tiny_train_config(learning_rate=0.01, warmup_steps=3, **{"optimizer.min_dim_size_to_factor": 2})
    o = cfg.optimizer
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    grads_seq = [
        {k: (3.0 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()} for _ in range(6)
    ]

    tx = make_optimizer(cfg)
    state = tx.init(jax.tree.map(jnp.asarray, params))
    got = jax.tree.map(jnp.asarray, params)
    for g in grads_seq:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, got)
        got = jax.tree.map(lambda a, u: a + u, got, updates)

    schedule = learning_rate_schedule(cfg)
    want = _reference_adafactor(
        params,
        grads_seq,
        lr_fn=lambda s: float(schedule(s)),
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        clip_norm=o.grad_clip_norm,
        update_clip=o.update_clip,
    )
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=2e-5, atol=1e-7)
    # β2 really is constant: a wrong (optax-default, step-dependent) β2 gives a different result.
    wrong = _reference_adafactor(
        params,
        grads_seq,
        lr_fn=lambda s: float(schedule(s)),
        b1=o.b1,
        b2=0.8,
        eps=o.eps,
        clip_norm=o.grad_clip_norm,
        update_clip=o.update_clip,
    )
    assert not np.allclose(np.asarray(got["w"]), wrong["w"], rtol=1e-3)


def test_warmup_then_constant_learning_rate():
    cfg = tiny_train_config(learning_rate=2e-4, warmup_steps=1000)
    s = learning_rate_schedule(cfg)
    np.testing.assert_allclose(
        [float(s(0)), float(s(500)), float(s(1000)), float(s(50_000))], [0.0, 1e-4, 2e-4, 2e-4], rtol=1e-6
    )


def test_warmup_then_cosine_learning_rate():
    # lr(t) = lr_end + (lr - lr_end)·(1 + cos(π·(t − warmup)/(total − warmup)))/2 after a linear warmup.
    cfg = tiny_train_config(
        learning_rate=1e-3, warmup_steps=100, num_train_steps=1100, lr_decay="cosine", lr_final_fraction=0.1
    )
    s = learning_rate_schedule(cfg)
    steps = np.array([0, 50, 100, 350, 600, 1100])
    cosine = 1e-4 + 9e-4 * (1 + np.cos(np.pi * (steps - 100) / 1000)) / 2
    want = np.where(steps < 100, 1e-3 * steps / 100, cosine)
    np.testing.assert_allclose([float(s(int(t))) for t in steps], want, rtol=1e-5)
    # A run shorter than its warmup (e.g. a quick notebook run of the demo config) only warms up.
    short = learning_rate_schedule(
        tiny_train_config(learning_rate=1e-3, warmup_steps=50, num_train_steps=40, lr_decay="cosine")
    )
    np.testing.assert_allclose([float(short(t)) for t in (0, 20, 39)], [0.0, 4e-4, 7.8e-4], rtol=1e-5)


def test_unknown_learning_rate_decay_fails_fast():
    with pytest.raises(ValueError, match="lr_decay='linear'"):
        learning_rate_schedule(tiny_train_config(lr_decay="linear"))


def test_ema_update_matches_formula():
    ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(3.0)}}
    params = {"a": jnp.array([0.0, 4.0]), "b": {"c": jnp.array(-1.0)}}
    out = ema_update(ema, params, 0.9999)
    np.testing.assert_allclose(out["a"], [0.9999, 2.0002], rtol=1e-7)
    np.testing.assert_allclose(out["b"]["c"], 3.0 * 0.9999 - 0.0001, rtol=1e-7)
