"""The full 3D-attention ablation (``model.attention_layout='joint'``): frames talk to each other
through the one attention, factorised blocks without temporal attention keep frames separate,
and MaskDiT's kept-token path equals the full path when every token is kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.model import maskdit
from stiv_jax.model.flops import forward_flops
from tests.model_utils import make_inputs, random_model, tiny_config


def _frame_leak(cfg) -> float:
    """Max change at frame 3 when only frame 0 of the input changes (temporal patch 1)."""
    model = random_model(cfg)
    x, t, kw = make_inputs(cfg, frames=4, cond=False)
    kw["cond_mask"] = None
    y = model(x, t, **kw)
    y2 = model(x.at[:, 0].add(1.0), t, **kw)
    return float(jnp.max(jnp.abs(y2[:, 3] - y[:, 3])))


def test_joint_attention_mixes_frames_and_factorised_spatial_does_not():
    kw = dict(temporal_attention=False, temporal_patch_size=1)
    assert _frame_leak(tiny_config(attention_layout="joint", **kw)) > 1e-3
    assert _frame_leak(tiny_config(**kw)) < 1e-6


def test_joint_keep_all_tokens_equals_unmasked():
    cfg = tiny_config(attention_layout="joint", temporal_attention=False)
    model = random_model(cfg)
    x, t, kw = make_inputs(cfg)
    all_idx = jnp.tile(jnp.arange(16, dtype=jnp.int32)[None], (2, 1))
    np.testing.assert_allclose(model(x, t, keep_idx=all_idx, **kw), model(x, t, **kw), atol=1e-5)
    part = maskdit.sample_keep_indices(jax.random.key(1), 2, 16, 0.5)
    assert np.isfinite(np.asarray(model(x, t, keep_idx=part, **kw))).all()


def test_joint_needs_temporal_attention_off():
    with pytest.raises(ValueError, match="temporal_attention=False"):
        tiny_config(attention_layout="joint")


def test_joint_attention_flops_grow_quadratically_in_frames():
    """Per-frame cost is flat for factorised attention (at fixed spatial size) and grows with
    the frame count for joint attention."""
    fact = tiny_config(hidden_size=64, num_heads=1)
    joint = tiny_config(hidden_size=64, num_heads=1, attention_layout="joint", temporal_attention=False)
    f = lambda cfg, n: forward_flops(cfg, frames=n, height=64, width=64, text_len=8) / n
    assert f(fact, 32) / f(fact, 8) < 1.05
    assert f(joint, 32) / f(joint, 8) > 2.0
