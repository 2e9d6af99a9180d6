"""Orbax checkpoints: one composite checkpoint per step holding the train state (params, EMA,
optimizer state, step, RNG) and the Grain data-iterator state, saved asynchronously.

Restoring takes an abstract state whose leaves carry the *target* shardings, so a checkpoint
written on one mesh restores onto any other mesh shape.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iter: Any | None = None) -> None:
        items = dict(state=ocp.args.StandardSave(state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> dict:
        """Restores ``state`` onto the shardings in ``abstract_state``; ``data_iter`` in place."""
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The training config a workdir was run with (``WORKDIR/config.json``)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a stiv-train workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_train_state(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """``(config, state, step)`` of a workdir's latest (or given) checkpoint, on one device.

    Used by the sampler, export and progressive init; the train state's structure is rebuilt
    from ``WORKDIR/config.json``, so no mesh or data pipeline is needed.
    """
    import functools

    from stiv_jax.train.optimizer import make_optimizer
    from stiv_jax.train.step import init_state

    config = load_config(workdir)
    abstract = jax.eval_shape(functools.partial(init_state, config, make_optimizer(config)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    with ocp.CheckpointManager(checkpoint_dir(workdir)) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}")
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return config, state, step


def load_params(workdir: str, ema: bool = True, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """``(config, params, step)``: the EMA (default) or raw parameters of a checkpoint, as numpy.

    A *partial* restore of just that subtree (structure from the item's metadata, arrays read as
    host numpy): no mesh, devices or optimizer state are needed, so a checkpoint written by a
    sharded multi-host run loads the same way on a laptop. Used by the sampler, export and
    progressive init.
    """
    import numpy as np

    config = load_config(workdir)
    key = "ema_params" if ema else "params"
    ckpt_dir = checkpoint_dir(workdir)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint directory")
    options = ocp.CheckpointManagerOptions(create=False)  # never create or clean anything
    with ocp.CheckpointManager(ckpt_dir, item_handlers={"state": ocp.PyTreeCheckpointHandler()}, options=options) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{ckpt_dir}: no checkpoint found")
        tree = manager.item_metadata(step)["state"]
        tree = getattr(tree, "tree", tree)
        if tree is None or key not in tree:
            raise ValueError(f"{ckpt_dir}/{step}/state: no {key!r} subtree (found {sorted(tree) if tree else []})")
        target = {key: tree[key]}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        restored = manager.restore(step, args=ocp.args.Composite(state=args))
    return config, restored["state"][key], step
