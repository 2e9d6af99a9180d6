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

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from stiv_jax.export.convert import model_config

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
    or ``nnx.replace_by_pure_dict``.
    """
    cfg = read_model_config(workdir)
    ckpt_dir = _checkpoint_dir(workdir)
    key = "ema_params" if ema else "params"
    with ocp.CheckpointManager(ckpt_dir, item_handlers={STATE_ITEM: ocp.PyTreeCheckpointHandler()}, options=_READ) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt_dir}: no checkpoint found")
        tree = mngr.item_metadata(step)[STATE_ITEM]
        tree = getattr(tree, "tree", tree)
        if tree is None or key not in tree:
            found = sorted(tree) if tree else []
            raise ValueError(f"{ckpt_dir}/{step}/{STATE_ITEM}: no {key!r} subtree (found {found})")
        target = {key: tree[key]}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        restored = mngr.restore(step, args=ocp.args.Composite(**{STATE_ITEM: args}))
    return cfg, restored[STATE_ITEM][key]


def latest_step(workdir: str | os.PathLike) -> int | None:
    """Step of the newest checkpoint in ``WORKDIR/checkpoints`` (None if there is none)."""
    with ocp.CheckpointManager(_checkpoint_dir(workdir), options=_READ) as mngr:
        return mngr.latest_step()
