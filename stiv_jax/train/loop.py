"""The training loop (big_vision style: one readable function).

Resumes automatically from the latest checkpoint in ``WORKDIR/checkpoints``; saves every
``checkpoint_every_steps``, at the end, and on SIGTERM/SIGINT (then exits); stops with a clear error
when a loss or gradient becomes NaN/inf, keeping the last good checkpoint. Logs loss, gradient
norm, learning rate, steps/s and model TFLOP/s with a progress bar and ETA to stdout,
``WORKDIR/metrics.jsonl`` and TensorBoard event files in ``WORKDIR/tb``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from stiv_jax.model.flops import train_step_flops
from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.parallel.rules import axis_rules
from stiv_jax.train import data as train_data
from stiv_jax.train.checkpoint import Checkpointer, save_config
from stiv_jax.train.init_from import apply_init_from
from stiv_jax.train.setup import build


class NonFiniteLossError(RuntimeError):
    pass


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (save, then exit)."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _progress(step: int, total: int, start_step: int, elapsed: float, width: int = 20) -> str:
    frac = step / max(total, 1)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    done = step - start_step
    eta = elapsed / done * (total - step) if done else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    return f"[{bar}] {100 * frac:5.1f}% ETA {eta_s}"


class _Logger:
    def __init__(self, workdir: str):
        self.primary = jax.process_index() == 0
        self.tb = None
        if self.primary:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tb"))
            self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, step: int, metrics: dict[str, float], line: str) -> None:
        if not self.primary:
            return
        print(line, flush=True)
        for k, v in metrics.items():
            self.tb.add_scalar(f"train/{k}", v, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.primary:
            self.tb.close()
            self.jsonl.close()


def _first_bad_step(state: dict) -> int:
    return int(jax.device_get(state["first_bad_step"]))


def train(config: ml_collections.ConfigDict, workdir: str, *, devices: list | None = None, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Runs (or resumes) training; returns the last logged metrics.

    ``devices`` restricts the mesh (default: all); ``callback(step)`` runs after every step.
    """
    if config.distributed:
        jax.distributed.initialize()
    mesh = make_mesh(config.mesh, devices)
    save_config(workdir, config)
    with jax.set_mesh(mesh), axis_rules(tuple(config.sharding_rules) if config.sharding_rules else None):
        return _train(config, workdir, build(config, mesh), callback)


def _train(config, workdir: str, tr, callback) -> dict[str, Any]:
    per_process = config.batch_size // jax.process_count()
    data_iter = train_data.make_iterator(config, per_process)
    ckpt = Checkpointer(workdir, max_to_keep=config.max_checkpoints_to_keep, async_save=config.async_checkpointing)
    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, tr.abstract_state, data_iter)
        print(f"Resumed from {workdir} at step {latest}", flush=True)
    else:
        state = apply_init_from(config, tr.init(), tr.state_shardings)
    frozen = tr.frozen(train_data.null_text_for(config))

    total = config.num_train_steps
    start = int(jax.device_get(state["step"]))
    flops = None
    logger = _Logger(workdir)
    last: dict[str, Any] = {}
    t0 = t_log = time.perf_counter()
    step_log = start
    try:
        with _StopSignal() as stop:
            for step in range(start, total):
                batch = train_data.to_global(next(data_iter), tr.mesh)
                if flops is None:
                    _, t, h, w, _ = tr.conditioner.latent_shape(batch)
                    flops = train_step_flops(config.model, batch=config.batch_size, frames=t, height=h, width=w, text_len=batch["text_mask"].shape[1], mask_ratio=config.mask_ratio)
                state, metrics = tr.step(state, batch, frozen)
                done = step + 1
                if callback is not None:
                    callback(done)
                if done % config.log_every_steps == 0 or done == total or stop.received:
                    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _raise_if_bad(state, ckpt)
                    now = time.perf_counter()
                    m["steps_per_sec"] = (done - step_log) / (now - t_log)
                    m["tflops_per_sec"] = m["steps_per_sec"] * flops / 1e12
                    t_log, step_log = now, done
                    line = f"step {done}/{total} {_progress(done, total, start, now - t0)} loss {m['loss']:.4f} grad {m['grad_norm']:.3f} lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s {m['tflops_per_sec']:.3f} TFLOP/s"
                    logger.write(done, m, line)
                    last = m
                if done % config.checkpoint_every_steps == 0 or done == total or stop.received:
                    _raise_if_bad(state, ckpt)
                    ckpt.save(done, state, data_iter)
                if stop.received:
                    ckpt.wait()
                    print(f"Received signal {stop.received}: saved checkpoint at step {done} in {workdir}; exiting.", flush=True)
                    last["stopped_at"] = done
                    break
    finally:
        ckpt.close()
        logger.close()
    return last


def _raise_if_bad(state: dict, ckpt: Checkpointer) -> None:
    bad = _first_bad_step(state)
    if bad >= 0:
        ckpt.wait()
        good = ckpt.latest_step()
        where = f"the last good checkpoint is step {good}" if good is not None else "no checkpoint was written"
        raise NonFiniteLossError(f"loss or gradient became NaN/inf at step {bad + 1}; training stopped and {where} (not overwritten).")
