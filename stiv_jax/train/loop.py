"""The training loop (big_vision style: one readable function).

Resumes automatically from the latest checkpoint in ``WORKDIR/checkpoints``; saves every
``checkpoint_every_steps``, at the end, and on SIGTERM/SIGINT or a preemption notice (then exits;
with several processes, all stop after the same step: stiv_jax/train/stopping.py); stops with a
clear error when a loss or gradient becomes NaN/inf, keeping the last good checkpoint. Logs loss,
gradient norm, learning rate, steps/s and model TFLOP/s with a progress bar and ETA to stdout,
``WORKDIR/metrics.jsonl`` and TensorBoard event files in ``WORKDIR/tb`` (process 0;
stiv_jax/storage/workdir.py, local or ``gs://``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from stiv_jax.model.flops import train_step_flops
from stiv_jax.parallel import distributed
from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.parallel.rules import axis_rules
from stiv_jax.storage.workdir import RunLog, Workdir
from stiv_jax.train import data as train_data
from stiv_jax.train.checkpoint import Checkpointer
from stiv_jax.train.init_from import apply_init_from
from stiv_jax.train.setup import build
from stiv_jax.train.stopping import StopSignal


class NonFiniteLossError(RuntimeError):
    pass


def _progress(step: int, total: int, start_step: int, elapsed: float, width: int = 20) -> str:
    frac = step / max(total, 1)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    done = step - start_step
    eta = elapsed / done * (total - step) if done else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    return f"[{bar}] {100 * frac:5.1f}% ETA {eta_s}"


def _first_bad_step(state: dict) -> int:
    return int(jax.device_get(state["first_bad_step"]))


def train(config: ml_collections.ConfigDict, workdir: str, *, devices: list | None = None, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Runs (or resumes) training; returns the last logged metrics.

    ``devices`` restricts the mesh (default: all); ``callback(step)`` runs after every step.
    """
    distributed.initialize(config)
    mesh = make_mesh(config.mesh, devices)
    wd = Workdir(workdir)
    train_data.check_source(config)  # e.g. an unmounted gs:// data.path: before anything compiles
    if distributed.is_primary():
        wd.save_config(config)
    with jax.set_mesh(mesh), axis_rules(tuple(config.sharding_rules) if config.sharding_rules else None):
        return _train(config, wd, build(config, mesh), callback)


def _train(config, wd: Workdir, tr, callback) -> dict[str, Any]:
    rows = train_data.process_rows(tr.mesh, config.batch_size)
    ckpt = Checkpointer(wd, max_to_keep=config.max_checkpoints_to_keep, async_save=config.async_checkpointing)
    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, tr.abstract_state)
        distributed.log(f"Resumed from {wd.path} at step {latest}")
    else:
        state = apply_init_from(config, tr.init(), tr.state_shardings)
    frozen = tr.frozen(train_data.null_text_for(config))

    total = config.num_train_steps
    start = int(jax.device_get(state["step"]))
    data_iter = train_data.make_iterator(config, rows=rows, start=start)  # the data position is the step
    flops = None
    log = RunLog(wd) if distributed.is_primary() else None
    last: dict[str, Any] = {}
    t0 = t_log = time.perf_counter()
    step_log = start
    try:
        with StopSignal(config.stop_check_every_steps) as stop:
            for step in range(start, total):
                batch = train_data.to_global(next(data_iter), tr.mesh, rows, config.batch_size)
                if flops is None:
                    _, t, h, w, _ = tr.conditioner.latent_shape(batch)
                    flops = train_step_flops(config.model, batch=config.batch_size, frames=t, height=h, width=w, text_len=batch["text_mask"].shape[1], mask_ratio=config.mask_ratio)
                state, metrics = tr.step(state, batch, frozen)
                done = step + 1
                if callback is not None:
                    callback(done)
                stopping = stop.should_stop(done)  # the same on every process
                if done % config.log_every_steps == 0 or done == total or stopping:
                    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _raise_if_bad(state, ckpt)
                    now = time.perf_counter()
                    m["steps_per_sec"] = (done - step_log) / (now - t_log)
                    m["tflops_per_sec"] = m["steps_per_sec"] * flops / 1e12
                    t_log, step_log = now, done
                    if log is not None:
                        print(f"step {done}/{total} {_progress(done, total, start, now - t0)} loss {m['loss']:.4f} grad {m['grad_norm']:.3f} lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s {m['tflops_per_sec']:.3f} TFLOP/s", flush=True)
                        log.write(done, m)
                    last = m
                if done % config.checkpoint_every_steps == 0 or done == total or stopping:
                    _raise_if_bad(state, ckpt)
                    ckpt.save(done, state)
                    if log is not None:
                        log.sync()
                if stopping:
                    ckpt.wait()
                    distributed.log(f"Stopping on {stop.reason}: saved checkpoint at step {done} in {wd.path}; exiting.")
                    last["stopped_at"] = done
                    break
    finally:
        ckpt.close()
        if log is not None:
            log.close()
    return last


def _raise_if_bad(state: dict, ckpt: Checkpointer) -> None:
    bad = _first_bad_step(state)
    if bad >= 0:
        ckpt.wait()
        good = ckpt.latest_step()
        where = f"the last good checkpoint is step {good}" if good is not None else "no checkpoint was written"
        raise NonFiniteLossError(f"loss or gradient became NaN/inf at step {bad + 1}; training stopped and {where} (not overwritten).")
