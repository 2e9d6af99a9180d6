"""Trainer: learning, sharding equivalence, exact resume via SIGTERM, mesh-changing restore,
NaN stop, config validation (issue: training)."""

import operator
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from stiv_jax.storage.checkpoints import Checkpointer
from stiv_jax.train.loop import NonFiniteLossError
from stiv_jax.train.setup import load_train_state
from tests.train_utils import losses, run, tiny_train_config


def _params(workdir):
    _, state, step = load_train_state(workdir)
    return state, step


def sigterm_at(stop: int):
    """A ``train`` callback that sends this process SIGTERM after step ``stop`` (a preemption)."""

    def callback(step: int) -> None:
        if step == stop:
            os.kill(os.getpid(), signal.SIGTERM)

    return callback


@pytest.fixture(scope="module")
def learning_runs(tmp_path_factory):
    """A 300-step run on 1 device, and the same run on 8 devices (fsdp=4, tensor=2) stopped by
    SIGTERM after its first 100 steps (same config, so the same learning-rate schedule)."""
    runs = {}
    for name, mesh, callback in [
        ("one", dict(fsdp=1, tensor=1), None),
        ("eight", dict(fsdp=4, tensor=2), sigterm_at(100)),
    ]:
        wd = str(tmp_path_factory.mktemp(name))
        cfg = tiny_train_config(num_train_steps=300, **{f"mesh.{k}": v for k, v in mesh.items()})
        run(cfg, wd, callback=callback)
        runs[name] = (wd, losses(wd))
    return runs


def test_loss_falls_clearly(learning_runs):
    curve = learning_runs["one"][1]
    assert len(curve) == 300 and np.all(np.isfinite(curve))
    start, end = curve[:20].mean(), curve[-50:].mean()
    assert end < 0.7 * start, (start, end)


def test_eight_devices_match_one_device(learning_runs):
    one, eight = learning_runs["one"][1], learning_runs["eight"][1]
    assert len(eight) == 100
    np.testing.assert_allclose(eight, one[:100], rtol=2e-3)
    state_eight, step = _params(learning_runs["eight"][0])
    leaf = jax.tree.leaves(state_eight["params"])[0]
    assert step == 100 and leaf.shape and np.all(np.isfinite(leaf))


def test_resume_after_sigterm_is_exact(tmp_path):
    cfg = tiny_train_config(num_train_steps=24, checkpoint_every_steps=8)
    straight = str(tmp_path / "straight")
    run(cfg, straight)

    resumed = str(tmp_path / "resumed")
    out = run(cfg, resumed, callback=sigterm_at(12))
    assert out["stopped_at"] == 12
    assert Checkpointer(resumed).latest_step() == 12
    run(cfg, resumed)

    np.testing.assert_array_equal(losses(resumed), losses(straight))
    a, step_a = _params(straight)
    b, step_b = _params(resumed)
    assert step_a == step_b == 24
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_restore_onto_a_different_mesh(tmp_path):
    wd = str(tmp_path / "run")
    run(tiny_train_config(num_train_steps=4, **{"mesh.fsdp": 8}), wd)  # saved sharded 8 ways
    before, _ = _params(wd)
    # Continue on a (data=2, fsdp=2, tensor=2) mesh: restore re-shards onto the new layout.
    cfg = tiny_train_config(num_train_steps=6, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    restored = {}
    run(cfg, wd, callback=lambda step: restored.setdefault("first", step))
    assert restored["first"] == 5
    after, step = _params(wd)
    assert step == 6
    moved = jax.tree.map(lambda x, y: not np.array_equal(x, y), before["params"], after["params"])
    assert any(jax.tree.leaves(moved))


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    wd = str(tmp_path / "diverge")
    # lr 0 for step 1 (warmup), then a huge lr: parameters explode and the loss becomes inf/NaN.
    cfg = tiny_train_config(
        num_train_steps=30,
        checkpoint_every_steps=1,
        learning_rate=1e30,
        warmup_steps=1,
        **{"optimizer.update_clip": 0.0},
    )
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step (\d+).*last good checkpoint is step (\d+)") as err:
        run(cfg, wd)
    import re

    bad, good = map(int, re.search(r"at step (\d+).*step (\d+)", str(err.value)).groups())
    assert good < bad
    state, step = _params(wd)
    assert step == good
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def test_unknown_config_key_fails_before_compiling(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stiv_jax.cli.train",
            "--config=experiments/tiny_synthetic.py",
            f"--workdir={tmp_path}",
            "--config.no_such_key=3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr
    assert not os.path.exists(tmp_path / "config.json")  # nothing ran


def test_gradient_accumulation_averages_microbatch_gradients():
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.encoders.conditioner import Conditioner
    from stiv_jax.train.data import SyntheticClip
    from stiv_jax.train.optimizer import make_optimizer
    from stiv_jax.train.step import accumulate_gradients, init_state, make_loss_fn, split_microbatches

    cfg = tiny_train_config()
    cond = Conditioner(cfg)
    state = init_state(cfg, make_optimizer(cfg))
    from stiv_jax.model.dit import STIV

    graphdef = nnx.split(jax.eval_shape(lambda: STIV(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)[0]
    grad_fn = jax.value_and_grad(make_loss_fn(cfg, graphdef, cond), has_aux=True)
    clips = [SyntheticClip(cfg.data.num_frames, cfg.data.resolution, cfg.data.max_text_length)(i) for i in range(4)]
    batch = {k: jnp.stack([c[k] for c in clips]) for k in clips[0]}
    frozen, key = cond.frozen_params(), jax.random.key(3)
    (loss, _), grads = jax.jit(lambda p, b, f, k: accumulate_gradients(grad_fn, p, b, f, k, 2))(
        state["params"], batch, frozen, key
    )
    micro = split_microbatches(batch, 2)
    keys = jax.random.split(key, 2)
    one_grad = jax.jit(grad_fn)  # one microbatch's gradient, compiled once for both (no scan)
    parts = [one_grad(state["params"], jax.tree.map(operator.itemgetter(j), micro), frozen, keys[j]) for j in range(2)]
    np.testing.assert_array_equal(micro["micro"][1], batch["micro"][1::2])  # rows j, j+2, ...
    np.testing.assert_allclose(loss, (parts[0][0][0] + parts[1][0][0]) / 2, rtol=1e-5)
    jax.tree.map(
        lambda g, a, b: np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-4, atol=1e-6),
        grads,
        parts[0][1],
        parts[1][1],
    )


@pytest.mark.parametrize("null_image", ["noise", "zeros"])
def test_null_image_is_what_a_dropped_image_shows(null_image):
    """With every image dropped (ti2v only): the ``noise`` null image leaves frame 0 on the noising
    path and in the loss, so the loss follows its content; ``zeros`` (multi-view, App. J.3) shows
    zero latents there and leaves it out of the loss, so the loss ignores its content. Kept images
    make the loss follow frame 0 in both cases (it is shown to the model)."""
    import jax.numpy as jnp
    from flax import nnx

    from stiv_jax.encoders.conditioner import Conditioner
    from stiv_jax.model.dit import STIV
    from stiv_jax.train.data import SyntheticClip
    from stiv_jax.train.optimizer import make_optimizer
    from stiv_jax.train.step import init_state, make_loss_fn

    def loss(dropout: float, brighten: float) -> float:
        cfg = tiny_train_config(image_dropout=dropout, null_image=null_image)
        cfg.tasks.t2v, cfg.tasks.ti2v = 0.0, 1.0
        cond = Conditioner(cfg)
        state = init_state(cfg, make_optimizer(cfg))
        graphdef = nnx.split(jax.eval_shape(lambda: STIV(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)[0]
        clips = [SyntheticClip(cfg.data.num_frames, cfg.data.resolution, cfg.data.max_text_length)(i) for i in range(2)]
        batch = {k: jnp.stack([c[k] for c in clips]) for k in clips[0]}
        batch["video"] = batch["video"].at[:, 0].set(jnp.clip(batch["video"][:, 0] + brighten, -1, 1))
        # Away from the zero-initialised output layers, so that the prediction depends on the input.
        leaves, tree = jax.tree.flatten(state["params"])
        keys = jax.random.split(jax.random.key(7), len(leaves))
        params = tree.unflatten([p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
        fn = make_loss_fn(cfg, graphdef, cond)
        return float(fn(params, batch, cond.frozen_params(), jax.random.key(3))[0])

    dropped = abs(loss(1.0, 0.0) - loss(1.0, 0.7))
    kept = abs(loss(0.0, 0.0) - loss(0.0, 0.7))
    assert kept > 1e-4
    if null_image == "zeros":
        assert dropped == 0.0
    else:
        assert dropped > 1e-4
