"""RoPE: attention scores depend only on position offsets; interpolation rescales positions."""

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.model.rope import apply_rope, interpolated_positions, rope_1d, rope_2d, rope_3d


def _score(q, k, tabs, i, j):
    cos, sin = (jnp.asarray(a)[:, None, :] for a in tabs)
    qr = apply_rope(jnp.broadcast_to(q, (cos.shape[0], 1, q.shape[-1])), cos, sin)
    kr = apply_rope(jnp.broadcast_to(k, (cos.shape[0], 1, k.shape[-1])), cos, sin)
    return float(jnp.sum(qr[i] * kr[j]))


def test_1d_scores_depend_only_on_offset():
    q, k = jax.random.normal(jax.random.key(0), (2, 32))
    tabs = rope_1d(20, 32)
    for off in (0, 1, 5):
        s = [_score(q, k, tabs, i + off, i) for i in range(0, 12, 3)]
        np.testing.assert_allclose(s, s[0], rtol=1e-4, atol=1e-4)
    assert abs(_score(q, k, tabs, 6, 0) - _score(q, k, tabs, 2, 0)) > 1e-3  # offsets do matter


def test_2d_scores_depend_only_on_row_and_column_offsets():
    h, w, d = 6, 7, 32
    q, k = jax.random.normal(jax.random.key(1), (2, d))
    tabs = rope_2d(h, w, d)
    idx = lambda r, c: r * w + c
    ref = _score(q, k, tabs, idx(3, 4), idx(1, 2))  # offset (2, 2)
    for r, c in [(2, 2), (4, 3), (5, 6)]:
        np.testing.assert_allclose(_score(q, k, tabs, idx(r, c), idx(r - 2, c - 2)), ref, rtol=1e-4, atol=1e-4)
    # rows and columns are encoded separately: offset (2, 0) differs from (0, 2)
    assert abs(_score(q, k, tabs, idx(2, 0), idx(0, 0)) - _score(q, k, tabs, idx(0, 2), idx(0, 0))) > 1e-3


def test_rotation_preserves_norm():
    x = jax.random.normal(jax.random.key(2), (10, 3, 16))
    cos, sin = (jnp.asarray(a)[:, None, :] for a in rope_1d(10, 16))
    np.testing.assert_allclose(
        jnp.linalg.norm(apply_rope(x, cos, sin), axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5
    )


def test_interpolation_scales_positions_into_the_trained_range():
    np.testing.assert_array_equal(interpolated_positions(8, 16), np.arange(8))  # within range: unchanged
    pos = interpolated_positions(32, 16)
    np.testing.assert_allclose(pos, np.arange(32) * 0.5)
    assert pos.max() < 16
    # A 2x larger grid interpolated against the reference has the reference's angles at even positions.
    big = rope_2d(32, 32, 16, ref=(16, 16))[0].reshape(32, 32, 16)
    small = rope_2d(16, 16, 16)[0].reshape(16, 16, 16)
    np.testing.assert_allclose(big[::2, ::2], small, rtol=1e-6)
    t_cos, _ = rope_1d(40, 16, ref=10)
    np.testing.assert_allclose(t_cos[8], rope_1d(10, 16)[0][2], rtol=1e-6)


def test_3d_scores_depend_only_on_time_row_and_column_offsets():
    t, h, w, d = 3, 4, 5, 64
    q, k = jax.random.normal(jax.random.key(3), (2, d))
    tabs = rope_3d(t, h, w, d)
    assert tabs[0].shape == (t * h * w, d)
    idx = lambda f, r, c: (f * h + r) * w + c
    ref = _score(q, k, tabs, idx(1, 2, 3), idx(0, 1, 1))  # offset (1, 1, 2)
    for f, r, c in [(2, 3, 4), (1, 1, 2), (2, 2, 3)]:
        np.testing.assert_allclose(
            _score(q, k, tabs, idx(f, r, c), idx(f - 1, r - 1, c - 2)), ref, rtol=1e-4, atol=1e-4
        )
    base = idx(0, 0, 0)
    by_axis = [_score(q, k, tabs, i, base) for i in (idx(2, 0, 0), idx(0, 2, 0), idx(0, 0, 2))]
    assert (
        min(abs(a - b) for a, b in [(by_axis[0], by_axis[1]), (by_axis[1], by_axis[2]), (by_axis[0], by_axis[2])])
        > 1e-3
    )
