"""Helpers for the PyTorch-export tests: torch inputs, relative error, a trainer-layout
checkpoint writer, and the end-to-end check to run on a real trainer workdir.

End-to-end against the trainer (stiv_jax/train), once a run has written a checkpoint::

    from tests.export_utils import assert_trainer_export_runs_in_torch
    assert_trainer_export_runs_in_torch(workdir, tmp_path)
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import torch
from flax import nnx

from stiv_jax.cli import export_torch
from stiv_jax.export import convert
from stiv_jax.export.torch_stiv import load_torch_stiv
from stiv_jax.model.dit import abstract_model
from tests.model_utils import make_inputs


def pure_params(model: nnx.Module) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@nnx.jit
def flax_forward(model, x, t, kw, keep_idx):
    return model(x, t, keep_idx=keep_idx, **kw)


def to_torch(tree):
    return jax.tree.map(lambda a: None if a is None else torch.from_numpy(np.array(a)), tree)


def rel_err(out, ref) -> float:
    """``max|out - ref| / max|ref|``."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def run_both(flax_model, torch_model, x, t, kw, keep_idx=None) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the Flax and the PyTorch model on the same (numpy/jax) inputs."""
    ref = np.asarray(flax_forward(flax_model, x, t, kw, keep_idx))
    with torch.no_grad():
        out = torch_model(to_torch(x), to_torch(t), keep_idx=to_torch(keep_idx), **to_torch(kw))
    return out.numpy(), ref


def write_trainer_checkpoint(workdir, model_cfg, params: dict, ema_params: dict, step: int) -> None:
    """A checkpoint in the trainer's layout: WORKDIR/config.json (model config under "model") and
    an orbax CheckpointManager Composite item ``state`` with params, EMA, optimizer state, step, rng."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"seed": 0, "model": json.loads(json.dumps(model_cfg.to_dict()))}, f)
    state = {
        "params": params,
        "ema_params": ema_params,
        "opt_state": {"mu": jax.tree.map(np.zeros_like, params), "count": np.int32(step)},
        "step": np.int32(step),
        "rng": np.asarray(jax.random.key_data(jax.random.key(step))),
    }
    with ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints")) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        mngr.wait_until_finished()


def assert_trainer_export_runs_in_torch(
    workdir, out_dir, *, ema: bool = True, frames: int = 4, tol: float = 1e-4
) -> float:
    """Exports ``workdir`` with the CLI, loads it in PyTorch and checks it against the Flax model
    restored from the same checkpoint (float32 compute); returns the relative error."""
    out = os.path.join(os.fspath(out_dir), "stiv.safetensors")
    assert export_torch.run([f"--workdir={workdir}", f"--out={out}", "--ema" if ema else "--no-ema"]) == out
    torch_model = load_torch_stiv(out, dtype=torch.float32)
    cfg, params, _ = convert.load_run(workdir, ema=ema)
    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.dtype = "float32"
    flax_model = abstract_model(cfg)
    state = nnx.state(flax_model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: np.asarray(a, np.float32), params))
    nnx.update(flax_model, state)
    x, t, kw = make_inputs(cfg, frames=frames, size=8)
    out_t, ref = run_both(flax_model, torch_model, x, t, kw)
    err = rel_err(out_t, ref)
    assert np.all(np.isfinite(out_t)) and err <= tol, (
        f"PyTorch export of {workdir} differs from Flax: rel err {err:.2e}"
    )
    return err
