"""The analytic FLOP counter (stiv_jax/model/flops.py) against XLA's own count.

``jax.jit(f).lower(...).cost_analysis()['flops']`` counts every HLO op of the (unoptimised)
program: 2·M·N·K per matmul like ours, plus one FLOP per elementwise op, reduction element and
so on, which our model-FLOP convention leaves out. With widths where matmuls dominate, XLA's
count must therefore be at least ours and at most 10% above it (measured: +3%). Layers are
unrolled (``scan_layers=False``) because XLA's cost analysis counts a while-loop body once.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from stiv_jax.model import maskdit
from stiv_jax.model.config import get_model_config
from stiv_jax.model.dit import STIV
from stiv_jax.model.flops import forward_flops, train_step_flops
from tests.model_utils import make_inputs

TOLERANCE = 0.10
B, SIZE, TEXT = 2, 16, 16


def _config(layout="factorised"):
    return get_model_config(
        "tiny",
        hidden_size=128,
        num_heads=2,
        num_layers=2,
        text_dim=128,
        scan_layers=False,
        remat_policy="none",
        attention_layout=layout,
        temporal_attention=layout == "factorised",
    )


def _xla_flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).cost_analysis()["flops"])


def _model_fn(cfg, frames, masked):
    graphdef, params = nnx.split(STIV(cfg, rngs=nnx.Rngs(params=0)))
    x, t, kw = make_inputs(cfg, batch=B, frames=frames, size=SIZE, text_len=TEXT)
    tokens = (SIZE // cfg.patch_size) ** 2
    keep = maskdit.sample_keep_indices(jax.random.key(0), B, tokens, 0.5) if masked else None
    apply = lambda p, x: nnx.merge(graphdef, p)(x, t, keep_idx=keep, **kw)
    return apply, params, x


@pytest.mark.parametrize(
    "frames,masked,layout",
    [(1, False, "factorised"), (4, False, "factorised"), (4, True, "factorised"), (4, False, "joint")],
)
def test_forward_flops_match_xla(frames, masked, layout):
    cfg = _config(layout)
    apply, params, x = _model_fn(cfg, frames, masked)
    ours = B * forward_flops(
        cfg, frames=frames, height=SIZE, width=SIZE, text_len=TEXT, mask_ratio=0.5 if masked else 0.0
    )
    xla = _xla_flops(apply, params, x)
    assert ours <= xla <= (1 + TOLERANCE) * ours, (xla, ours, xla / ours)


def test_train_step_flops_match_xla_gradient():
    """Forward + backward of activations and weights: 3× the forward."""
    cfg = _config()
    apply, params, x = _model_fn(cfg, 4, False)
    loss = lambda p, x: jnp.mean(jnp.square(apply(p, x)))
    ours = train_step_flops(cfg, batch=B, frames=4, height=SIZE, width=SIZE, text_len=TEXT)
    xla = _xla_flops(jax.grad(loss), params, x)
    assert ours <= xla <= (1 + TOLERANCE) * ours, (xla, ours, xla / ours)


def test_counter_catches_a_wrong_config():
    """The comparison can fail: counting a 4-frame video as 2 frames is far outside the band."""
    cfg = _config()
    apply, params, x = _model_fn(cfg, 4, False)
    wrong = B * forward_flops(cfg, frames=2, height=SIZE, width=SIZE, text_len=TEXT)
    assert _xla_flops(apply, params, x) > (1 + TOLERANCE) * wrong
