"""Read the model params of a training run's latest orbax checkpoint, on CPU, as numpy.

Layout written by the trainer (stiv_jax/train)::

    WORKDIR/config.json                 full training config; the model config under "model"
    WORKDIR/checkpoints/<step>/state    orbax Composite item "state": {"params", "ema_params",
                                        "opt_state", "step", "rng", ...}; params are nested pure
                                        dicts (nnx.to_pure_dict of the model's nnx.Param state)

Only the wanted params subtree is read: the item's tree metadata gives its structure, and a
*partial* PyTree restore with ``RestoreArgs(restore_type=np.ndarray)`` reads just those arrays
as host numpy. No target model, mesh or device is needed, so a checkpoint written by a sharded
multi-host TPU run restores the same way on a laptop, and the optimizer state is never loaded.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from stiv_jax.export.convert import model_config
from stiv_jax.train import checkpoint as train_checkpoint

STATE_ITEM = "state"
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
_READ = ocp.CheckpointManagerOptions(create=False)  # never create or clean anything in the workdir


def _checkpoint_dir(workdir: str | os.PathLike) -> str:
    path = os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_DIR)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no checkpoint directory")
    return path


def read_model_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The model config (key ``model`` of ``WORKDIR/config.json``)."""
    path = os.path.join(os.fspath(workdir), CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no training config (is {os.fspath(workdir)!r} a stiv-train workdir?)")
    with open(path) as f:
        full = json.load(f)
    if "model" not in full:
        raise ValueError(f"{path}: no 'model' key (found {sorted(full)})")
    return model_config(full["model"])


def load_params(workdir: str | os.PathLike, ema: bool = True, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """``(model_config, pure params)`` of the latest (or given) checkpoint; EMA params by default.

    Returns numpy arrays in a nested dict, ready for :func:`stiv_jax.export.convert.flax_to_torch`
    or ``nnx.replace_by_pure_dict`` (a partial restore: see ``stiv_jax.train.checkpoint``).
    """
    cfg = read_model_config(workdir)
    _, params, _ = train_checkpoint.load_params(os.fspath(workdir), ema=ema, step=step)
    return cfg, params


def latest_step(workdir: str | os.PathLike) -> int | None:
    """Step of the newest checkpoint in ``WORKDIR/checkpoints`` (None if there is none)."""
    with ocp.CheckpointManager(_checkpoint_dir(workdir), options=_READ) as mngr:
        return mngr.latest_step()
