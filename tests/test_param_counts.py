"""Parameter counts of the paper sizes (Table 1) via jax.eval_shape (no allocation).

Convention (stiv_jax/model/config.py): XL/XXL are counted as image models (no temporal
attention), M as the video model (with temporal attention), everything else included.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from stiv_jax.model.config import get_model_config
from stiv_jax.model.dit import STIV


def count(cfg) -> int:
    abstract = jax.eval_shape(lambda: STIV(cfg, rngs=nnx.Rngs(params=0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("size,temporal,paper", [("XL", False, 0.6e9), ("XXL", False, 1.5e9), ("M", True, 8.7e9)])
def test_paper_sizes_within_ten_percent(size, temporal, paper):
    n = count(get_model_config(size, temporal_attention=temporal))
    assert abs(n - paper) / paper < 0.10, f"{size}: {n / 1e9:.3f}B vs paper {paper / 1e9}B"


def test_temporal_attention_adds_four_d_squared_per_block():
    img, vid = (count(get_model_config("XL", temporal_attention=t)) for t in (False, True))
    d, blocks = 1152, 28 + 2
    assert vid - img == blocks * (4 * d * d + 4 * d + 2 * 64)
