"""The sin-cos absolute position table (stiv_jax/model/posembed.py) against its formula."""

import numpy as np
import pytest

from stiv_jax.model.posembed import POS_EMBED_THETA, sincos_3d


def _expected(pos: float, k: int) -> np.ndarray:
    angles = pos * POS_EMBED_THETA ** (-np.arange(k) / k)
    return np.concatenate([np.sin(angles), np.cos(angles)])


def test_each_axis_has_its_own_channels():
    t, h, w, dim = 3, 4, 5, 40  # per-axis block 12 channels (k = 6), 4 zero channels
    table = sincos_3d(t, h, w, dim, ref=(t, h, w)).reshape(t, h, w, dim)
    assert table.dtype == np.float32
    for f, r, c in [(0, 0, 0), (2, 1, 4), (1, 3, 2)]:
        want = np.concatenate([_expected(f, 6), _expected(r, 6), _expected(c, 6), np.zeros(4)])
        np.testing.assert_allclose(table[f, r, c], want, atol=1e-6)
    # every (frame, row, column) gets its own vector
    flat = table.reshape(-1, dim)
    assert len({tuple(np.round(v, 5)) for v in flat}) == t * h * w


def test_grids_beyond_the_reference_are_interpolated_into_it():
    small = sincos_3d(2, 3, 3, 48, ref=(2, 3, 3)).reshape(2, 3, 3, 48)
    big = sincos_3d(4, 6, 6, 48, ref=(2, 3, 3)).reshape(4, 6, 6, 48)
    np.testing.assert_allclose(big[::2, ::2, ::2], small, atol=1e-6)  # position 2i of 2n → i
    assert not np.allclose(big[1, ::2, ::2], small[0])  # frame 1 of 4 is at 0.5: a new position


def test_too_narrow_width_is_rejected():
    with pytest.raises(ValueError, match="hidden_size"):
        sincos_3d(1, 1, 1, 4, ref=(1, 1, 1))
