"""Read the model config and params of a training run's checkpoint, on CPU, as numpy (export).

The run directory's layout is :mod:`stiv_jax.storage.workdir`'s; the read itself is
``stiv_jax.train.checkpoint.restore_params``: a *partial* restore of just the wanted params
subtree (structure from the item's metadata, arrays as host numpy), so a checkpoint written by a
sharded multi-host TPU run, local or in a ``gs://`` bucket, loads the same way on a laptop and
the optimizer state is never read; a missing or unreadable step is a ``CheckpointError`` naming
the steps there are.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from stiv_jax.storage.workdir import Workdir, as_workdir
from stiv_jax.train import checkpoint as train_checkpoint

def read_model_config(workdir: str | os.PathLike | Workdir) -> ml_collections.ConfigDict:
    """The model config (key ``model`` of ``WORKDIR/config.json``)."""
    from stiv_jax.export.convert import model_config  # torch and the model code: only for export

    return model_config(as_workdir(workdir).model_config_dict())


def load_params(workdir: str | os.PathLike | Workdir, ema: bool = True, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """``(model_config, pure params)`` of the latest (or given) checkpoint; EMA params by default.

    Returns numpy arrays in a nested dict, ready for :func:`stiv_jax.export.convert.flax_to_torch`
    or ``nnx.replace_by_pure_dict``.
    """
    cfg = read_model_config(workdir)
    params, _ = train_checkpoint.restore_params(workdir, ema=ema, step=step)
    return cfg, params


def latest_step(workdir: str | os.PathLike | Workdir) -> int | None:
    """Step of the newest checkpoint in ``WORKDIR/checkpoints`` (None if there is none)."""
    return train_checkpoint.latest_step(as_workdir(workdir))
