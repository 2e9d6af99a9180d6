"""Several JAX processes (multi-host pods, GPU clusters, or N processes on one machine).

``config.distributed=True`` calls ``jax.distributed.initialize`` before any other JAX call. Cloud
TPU and Slurm find their peers themselves; elsewhere (plain VMs, GPU clusters, tests) set
``distributed_coordinator`` (``host:port`` of process 0), ``distributed_num_processes`` and
``distributed_process_id``. Decisions that change the control flow (stop now, save now) must be
taken by every process together: :func:`any_process` is the cross-process OR.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np


def initialize(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize`` with the config's coordinator / process count / id (unset
    ones auto-detected). A no-op unless ``config.distributed``."""
    if not config.distributed:
        return
    coordinator = config.get("distributed_coordinator") or None
    num = config.get("distributed_num_processes")
    pid = config.get("distributed_process_id")
    if coordinator is not None and (num is None or pid is None):
        raise ValueError(
            "config.distributed_coordinator is set: also set config.distributed_num_processes "
            "and config.distributed_process_id (or set none of them to auto-detect on TPU/Slurm)"
        )
    if num is not None and pid is not None and not 0 <= pid < num:
        raise ValueError(f"config.distributed_process_id={pid} is not in [0, distributed_num_processes={num})")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)


def is_primary() -> bool:
    return jax.process_index() == 0


def log(message: str) -> None:
    """Prints on process 0 only (one line per event, not one per host)."""
    if is_primary():
        print(message, flush=True)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a collective: all must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag], np.bool_))))


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
    """``x`` as numpy on every process, also when it is sharded over devices of several processes
    (then a collective: every process must call it with its part of the same global array)."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def barrier(name: str) -> None:
    """Every process waits here until all have arrived."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
