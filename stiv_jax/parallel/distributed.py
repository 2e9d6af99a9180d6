"""Several JAX processes (multi-host pods, GPU clusters, or N processes on one machine).

``config.distributed=True`` calls ``jax.distributed.initialize`` before any other JAX call. Cloud
TPU and Slurm find their peers themselves; elsewhere (plain VMs, GPU clusters, tests) set
``distributed_coordinator`` (``host:port`` of process 0), ``distributed_num_processes`` and
``distributed_process_id``. Decisions that change the control flow (stop now, save now) must be
taken by every process together: :func:`any_process` is the cross-process OR.

CPU collectives (gloo) connect the processes when a new program's collective first runs and give
every process 30 s to arrive; compile times differ by more than that on a loaded machine. So a
program with collectives is compiled by :func:`compile_together`, which returns once every process
has met at :func:`barrier` (the coordination service's: no device program, no 30 s limit), then it
runs: the trainer's step and the sampler's programs; :func:`to_host` meets there before its gather.
"""

from __future__ import annotations

import collections
import time

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

        barrier("to_host")
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


BARRIER_TIMEOUT_S = 3600  # a peer may still be compiling a large model
_barrier_calls: collections.Counter[str] = collections.Counter()


def barrier(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
    """Every process waits here until all have arrived (all call it with the same names in the
    same order). Uses ``jax.distributed``'s coordination service, so it runs no device program
    and waits up to ``timeout_s`` for a slow peer; a peer that died fails it sooner (heartbeats)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client has no public accessor

    client = jax_distributed.global_state.client
    if client is None:  # processes set up by something other than jax.distributed.initialize
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    _barrier_calls[name] += 1  # a barrier id is used once
    client.wait_at_barrier(f"stiv/{name}/{_barrier_calls[name]}", timeout_in_ms=timeout_s * 1000)


def compile_together(lowered: jax.stages.Lowered, name: str) -> tuple[jax.stages.Compiled, float]:
    """``lowered`` compiled, and the seconds the compilation took. With several processes it returns
    once every process has compiled it (:func:`barrier`): on CPU a program's first collective gives
    the peers only 30 s to arrive, less than a slower peer may still need to compile."""
    start = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    barrier(f"compiled {name}")
    return compiled, seconds
