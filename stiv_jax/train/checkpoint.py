"""Orbax checkpoints: one composite checkpoint per step holding the train state (params, EMA,
optimizer state, step, RNG) and the Grain data-iterator state, saved asynchronously.

Restoring takes an abstract state whose leaves carry the *target* shardings, so a checkpoint
written on one mesh restores onto any other mesh shape.
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from stiv_jax.storage.workdir import Workdir, as_workdir

_READ = ocp.CheckpointManagerOptions(create=False)  # readers never create or clean anything


class Checkpointer:
    """The orbax manager of ``WORKDIR/checkpoints`` (local or ``gs://``)."""

    def __init__(self, workdir: str | Workdir, *, max_to_keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(as_workdir(workdir).checkpoints, options=options)

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


def latest_step(workdir: str | Workdir) -> int | None:
    """Step of the newest checkpoint (None if there is none); raises if there is no checkpoint
    directory at all."""
    wd = as_workdir(workdir)
    if not wd.checkpoints.exists():
        raise FileNotFoundError(f"{wd.checkpoints}: no checkpoint directory")
    with ocp.CheckpointManager(wd.checkpoints, options=_READ) as manager:
        return manager.latest_step()


def load_train_state(workdir: str | Workdir, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """``(config, state, step)`` of a workdir's latest (or given) checkpoint, on one device.

    Used by the sampler, export and progressive init; the train state's structure is rebuilt
    from ``WORKDIR/config.json``, so no mesh or data pipeline is needed.
    """
    import functools

    from stiv_jax.train.optimizer import make_optimizer
    from stiv_jax.train.step import init_state

    wd = as_workdir(workdir)
    config = wd.load_config()
    abstract = jax.eval_shape(functools.partial(init_state, config, make_optimizer(config)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    with ocp.CheckpointManager(wd.checkpoints, options=_READ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {wd.checkpoints}")
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return config, state, step


def load_params(workdir: str | Workdir, ema: bool = True, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """``(config, params, step)``: the EMA (default) or raw parameters of a checkpoint, as numpy.

    A *partial* restore of just that subtree (structure from the item's metadata, arrays read as
    host numpy): no mesh, devices or optimizer state are needed, so a checkpoint written by a
    sharded multi-host run loads the same way on a laptop. Used by the sampler, export and
    progressive init.
    """
    import numpy as np

    wd = as_workdir(workdir)
    config = wd.load_config()
    key = "ema_params" if ema else "params"
    ckpt_dir = wd.checkpoints
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint directory")
    with ocp.CheckpointManager(ckpt_dir, item_handlers={"state": ocp.PyTreeCheckpointHandler()}, options=_READ) as manager:
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
