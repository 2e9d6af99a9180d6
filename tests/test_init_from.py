"""Progressive initialisation (§2.4, Fig. 4): spatial weights from a T2I run, temporal weights from
a T2V run, into a run at a larger token grid (RoPE interpolation)."""

import jax
import numpy as np

from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.storage.checkpoints import Checkpointer
from stiv_jax.storage.workdir import Workdir
from stiv_jax.train.init_from import _flatten, apply_init_from
from stiv_jax.train.setup import build
from tests.model_utils import forward, make_inputs
from tests.train_utils import tiny_train_config


def _fresh(cfg):
    mesh = make_mesh(cfg.mesh, jax.devices()[:1])
    with jax.set_mesh(mesh):
        tr = build(cfg, mesh)
        return tr, tr.init()


def _write_run(workdir, cfg):
    tr, state = _fresh(cfg)
    Workdir(workdir).save_config(cfg)
    ckpt = Checkpointer(workdir, async_save=False)
    ckpt.save(1, state)
    ckpt.close()
    return _flatten(jax.device_get(state["ema_params"]))


def test_spatial_from_t2i_and_temporal_from_t2v(tmp_path):
    grid = {"model.rope_ref_grid": (2, 4, 4)}
    t2i = _write_run(
        str(tmp_path / "t2i"),
        tiny_train_config(seed=1, **{"model.temporal_attention": False, "data.num_frames": 1, **grid}),
    )
    t2v = _write_run(str(tmp_path / "t2v"), tiny_train_config(seed=2, **grid))

    # The new run is at twice the resolution: 8x8 tokens > the 4x4 reference grid → interpolated RoPE.
    cfg = tiny_train_config(
        seed=3,
        **{
            "data.resolution": 32,
            "init_from.spatial": str(tmp_path / "t2i"),
            "init_from.temporal": str(tmp_path / "t2v"),
            **grid,
        },
    )
    tr, fresh = _fresh(cfg)
    own = _flatten(jax.device_get(fresh["params"]))
    state = apply_init_from(cfg, fresh, tr.state_shardings)
    got = _flatten(jax.device_get(state["params"]))
    ema = _flatten(jax.device_get(state["ema_params"]))

    temporal = [p for p in got if "temporal_attn" in p]
    assert temporal and len(temporal) < len(got)
    for path, value in got.items():
        source = t2v if "temporal_attn" in path else t2i
        np.testing.assert_array_equal(value, source[path], err_msg=str(path))
        np.testing.assert_array_equal(ema[path], value)
    assert any(not np.array_equal(own[p], got[p]) for p in got)  # really replaced

    # The initialised model runs at the larger grid.
    from flax import nnx

    from stiv_jax.model.dit import STIV

    model = nnx.merge(
        nnx.split(jax.eval_shape(lambda: STIV(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)[0], state["params"]
    )
    x, t, kw = make_inputs(model.cfg, frames=4, size=16)
    assert np.all(np.isfinite(forward(model, x, t, kw)))


def test_shape_mismatch_is_named(tmp_path):
    import pytest

    _write_run(str(tmp_path / "wide"), tiny_train_config(seed=1, **{"model.hidden_size": 96, "model.num_heads": 2}))
    cfg = tiny_train_config(seed=3, **{"init_from.spatial": str(tmp_path / "wide")})
    tr, fresh = _fresh(cfg)
    with pytest.raises(ValueError, match=r"init_from: shape mismatch at \S+"):
        apply_init_from(cfg, fresh, tr.state_shardings)
