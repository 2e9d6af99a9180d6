"""The training loop (big_vision style: one readable function).

Holds ``WORKDIR/lock.json`` while it runs (one trainer per workdir); resumes automatically from
the newest readable checkpoint in ``WORKDIR/checkpoints`` after checking that the config is
compatible with the workdir's (``config.json`` is written only once the state is restored or
initialised); skips records the input pipeline cannot read and stops past
``data.max_skipped_fraction`` of them; saves every
``checkpoint_every_steps``, at the end, and on SIGTERM/SIGINT or a preemption notice (then exits;
with several processes, all stop after the same step: stiv_jax/train/stopping.py); stops with a
clear error when a loss or gradient becomes NaN/inf, keeping the last good checkpoint. Logs loss,
gradient norm, learning rate, steps/s and model TFLOP/s with a progress bar and ETA to stdout,
``WORKDIR/metrics.jsonl`` and TensorBoard event files in ``WORKDIR/tb`` (process 0;
stiv_jax/storage/workdir.py, local or ``gs://``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from stiv_jax.data import latent_cache
from stiv_jax.errors import UserError
from stiv_jax.model.flops import train_step_flops
from stiv_jax.parallel import distributed
from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.parallel.rules import axis_rules
from stiv_jax.storage.checkpoints import Checkpointer
from stiv_jax.storage.lock import WorkdirLock, WorkdirLocked
from stiv_jax.storage.workdir import RunLog, Workdir
from stiv_jax.train import data as train_data
from stiv_jax.train import evaluation
from stiv_jax.train.config import resume_changes, validate
from stiv_jax.train.init_from import apply_init_from
from stiv_jax.train.setup import build
from stiv_jax.train.stopping import StopSignal


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or gradient became NaN/inf (the last good checkpoint is kept)."""


class TooManySkippedRecords(UserError):
    """More of the records read so far were unreadable than ``data.max_skipped_fraction``."""


def _progress(step: int, total: int, start_step: int, elapsed: float, width: int = 20) -> str:
    frac = step / max(total, 1)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    done = step - start_step
    eta = elapsed / done * (total - step) if done else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    return f"[{bar}] {100 * frac:5.1f}% ETA {eta_s}"


def _first_bad_step(state: dict) -> int:
    return int(jax.device_get(state["first_bad_step"]))


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices: list | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) training; returns the last logged metrics.

    ``devices`` restricts the mesh (default: all); ``callback(step)`` runs after every step.
    """
    validate(config)
    distributed.initialize(config)
    evaluation.check(config)
    wd = Workdir(workdir)
    train_data.check_source(config)  # e.g. an unmounted gs:// data.path: before anything compiles
    mesh = make_mesh(config.mesh, devices)
    with _locked(wd):
        if wd.has_config() and wd.checkpoints.exists():  # a resume: refuse a different model first
            for line in resume_changes(wd.load_config(), config, where=wd.path):
                distributed.log(f"Resuming with a changed setting: {line}")
        with jax.set_mesh(mesh), axis_rules(tuple(config.sharding_rules) if config.sharding_rules else None):
            return _train(config, wd, build(config, mesh), callback)


@contextlib.contextmanager
def _locked(wd: Workdir) -> Iterator[None]:
    """``WORKDIR/lock.json`` held by process 0; every process fails together if it is taken."""
    lock = WorkdirLock(wd) if distributed.is_primary() else None
    refused: WorkdirLocked | None = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirLocked as e:
            refused, lock = e, None
    if distributed.any_process(refused is not None):
        raise refused or WorkdirLocked(f"{wd.path}: process 0 could not lock the workdir (see its log)")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _train(config, wd: Workdir, tr, callback) -> dict[str, Any]:
    rows = train_data.process_rows(tr.mesh, config.batch_size)
    ckpt = Checkpointer(wd, max_to_keep=config.max_checkpoints_to_keep, async_save=config.async_checkpointing)
    latest, state = ckpt.restore_newest_readable(tr.abstract_state)
    if latest is not None:
        distributed.log(f"Resumed from {wd.path} at step {latest}")
    else:
        state = apply_init_from(config, tr.init(), tr.state_shardings)
    if distributed.is_primary():
        wd.save_config(config)  # only now: a failed restore leaves the workdir's config as it was
    frozen = tr.frozen(latent_cache.null_text_for(config))
    evaluate = evaluation.TrainingEval(config, tr.graphdef, tr.mesh) if config.eval_every_steps else None

    total = config.num_train_steps
    start = int(jax.device_get(state["step"]))
    if start >= total:
        distributed.log(f"Nothing to do: {wd.path} is at step {start} and config.num_train_steps={total}.")
    data_iter = train_data.make_iterator(config, rows=rows, start=start)  # the data position is the step
    flops = step_fn = None
    log = RunLog(wd, keep_until=start) if distributed.is_primary() else None
    skipped = _SkipCounter(config)
    last: dict[str, Any] = {}
    t0 = t_log = time.perf_counter()
    step_log = start
    try:
        with StopSignal(config.stop_check_every_steps) as stop:
            for step in range(start, total):
                batch = train_data.to_global(next(data_iter), tr.mesh, rows, config.batch_size)
                if step_fn is None:
                    step_fn = _compile_step(tr, state, batch, frozen)
                    _, t, h, w, _ = tr.conditioner.latent_shape(batch)
                    flops = train_step_flops(
                        config.model,
                        batch=config.batch_size,
                        frames=t,
                        height=h,
                        width=w,
                        text_len=batch["text_mask"].shape[1],
                        mask_ratio=config.mask_ratio,
                    )
                state, metrics = step_fn(state, batch, frozen)
                skipped.add(metrics)
                done = step + 1
                if callback is not None:
                    callback(done)
                stopping = stop.should_stop(done)  # the same on every process
                if done % config.log_every_steps == 0 or done == total or stopping:
                    m = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "skipped_records"}
                    _raise_if_bad(state, ckpt)
                    m.update(skipped.check(done - start))
                    now = time.perf_counter()
                    m["steps_per_sec"] = (done - step_log) / (now - t_log)
                    m["tflops_per_sec"] = m["steps_per_sec"] * flops / 1e12
                    t_log, step_log = now, done
                    if log is not None:
                        print(
                            f"step {done}/{total} {_progress(done, total, start, now - t0)} loss {m['loss']:.4f} grad {m['grad_norm']:.3f} lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s {m['tflops_per_sec']:.3f} TFLOP/s",
                            flush=True,
                        )
                        log.write(done, m)
                    last = m
                if evaluate is not None and done % config.eval_every_steps == 0:
                    last.update({f"eval/{k}": v for k, v in evaluate(done, state, log).items()})
                if done % config.checkpoint_every_steps == 0 or done == total or stopping:
                    _raise_if_bad(state, ckpt)
                    ckpt.save(done, state)
                    if log is not None:
                        log.sync()
                if stopping:
                    ckpt.wait()
                    distributed.log(
                        f"Stopping on {stop.reason}: saved checkpoint at step {done} in {wd.path}; exiting."
                    )
                    last["stopped_at"] = done
                    break
    finally:
        ckpt.close()
        if log is not None:
            log.close()
    return last


def _compile_step(tr, state: dict, batch: dict, frozen: Any) -> Callable:
    """The train step compiled before it first runs, by every process before any runs it."""
    compiled, seconds = distributed.compile_together(tr.step.lower(state, batch, frozen), "train step")
    distributed.log(f"Compiled the train step in {seconds:.1f}s")
    return compiled


class _SkipCounter:
    """Unreadable records (``skipped_records`` of each step), summed at log steps without a
    device sync per step; past ``data.max_skipped_fraction`` of the records read (counted over
    at least ``MIN_READ``, so a few bad records early on do not stop a run), training stops."""

    MIN_READ = 1000

    def __init__(self, config: ml_collections.ConfigDict):
        self.batch_size, self.fraction = config.batch_size, float(config.data.get("max_skipped_fraction", 0.0))
        self.pending: list[jax.Array] = []
        self.total = 0

    def add(self, metrics: dict) -> None:
        if "skipped_records" in metrics:
            self.pending.append(metrics["skipped_records"])

    def check(self, steps: int) -> dict[str, float]:
        if not self.pending and not self.total:
            return {}
        self.total += int(sum(int(v) for v in jax.device_get(self.pending)))
        self.pending = []
        read = steps * self.batch_size + self.total
        if self.total > self.fraction * max(read, self.MIN_READ):
            raise TooManySkippedRecords(
                f"{self.total} of the {read} records read in this session could not be read or decoded, more "
                f"than config.data.max_skipped_fraction={self.fraction:g}; the warnings above name each shard and "
                "key (raise the fraction to train on regardless)"
            )
        return {"data/skipped_records": float(self.total)}


def _raise_if_bad(state: dict, ckpt: Checkpointer) -> None:
    bad = _first_bad_step(state)
    if bad >= 0:
        ckpt.wait()
        good = ckpt.latest_step()
        where = f"the last good checkpoint is step {good}" if good is not None else "no checkpoint was written"
        raise NonFiniteLossError(
            f"loss or gradient became NaN/inf at step {bad + 1}; training stopped and {where} (not overwritten)."
        )
