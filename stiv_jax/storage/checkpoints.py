"""Orbax checkpoints: one composite checkpoint per step holding the train state (params, EMA,
optimizer state, step, RNG), saved asynchronously. The data position is the step itself
(stiv_jax/train/data.py), so no data-iterator state is stored.

Restoring takes an abstract state whose leaves carry the *target* shardings, so a checkpoint
written on one mesh restores onto any other mesh shape. A checkpoint that cannot be restored
(a truncated array file, missing metadata) is moved, never deleted, to
``WORKDIR/damaged_checkpoints/<step>`` with a warning, and the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp

from stiv_jax.errors import UserError, one_line
from stiv_jax.parallel import distributed
from stiv_jax.storage import paths
from stiv_jax.storage.workdir import CHECKPOINTS, Workdir, as_workdir

_READ = ocp.CheckpointManagerOptions(create=False)  # readers never create or clean anything
_REASON_CHARS = 240  # tensorstore errors carry a JSON spec of several KB


class CheckpointError(UserError):
    """A checkpoint step that does not exist or cannot be read (names the available steps)."""


class Checkpointer:
    """The orbax manager of ``WORKDIR/checkpoints`` (local or ``gs://``)."""

    def __init__(self, workdir: str | Workdir, *, max_to_keep: int = 3, async_save: bool = True):
        self.workdir = as_workdir(workdir)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(self.workdir.checkpoints, options=self._options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)

    def restore(self, step: int, abstract_state: Any) -> dict:
        """Restores ``state`` onto the shardings in ``abstract_state``."""
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))[
            "state"
        ]

    def restore_newest_readable(self, abstract_state: Any) -> tuple[int | None, dict | None]:
        """``(step, state)`` of the newest checkpoint every process can restore, moving each
        unreadable newer one aside (see the module docstring); ``(None, None)`` if none is left."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            error = None
            try:
                state = self.restore(step, abstract_state)
            except Exception as e:
                error = e
                _quiet_closed_loop_callbacks()
            if not distributed.any_process(error is not None):
                return step, state
            moved = self.workdir.damaged_checkpoint(step)
            if distributed.is_primary():
                why = one_line(error) if error else "on another process"
                print(
                    f"Warning: checkpoint step {step} cannot be restored ({why}); moved to {moved} "
                    "(not deleted); trying the one before.",
                    file=sys.stderr,
                    flush=True,
                )
                paths.move(self.workdir.file(CHECKPOINTS, str(step)), moved)
            distributed.barrier("damaged_checkpoint")
            self.manager.close()
            self.manager = ocp.CheckpointManager(self.workdir.checkpoints, options=self._options)
        return None, None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def available_steps(workdir: str | os.PathLike | Workdir) -> list[int]:
    """Steps of the checkpoints in ``WORKDIR/checkpoints``, oldest first; raises if there is no
    checkpoint directory at all."""
    wd = as_workdir(workdir)
    if not wd.checkpoints.exists():
        raise FileNotFoundError(f"{wd.checkpoints}: no checkpoint directory")
    with ocp.CheckpointManager(wd.checkpoints, options=_READ) as manager:
        return sorted(manager.all_steps())


def latest_step(workdir: str | Workdir) -> int | None:
    """Step of the newest checkpoint (None if there is none); raises if there is no checkpoint
    directory at all."""
    steps = available_steps(workdir)
    return steps[-1] if steps else None


def restore_state(workdir: str | Workdir, target: Any, step: int | None = None) -> tuple[dict, int]:
    """``(state, step)``: the whole train state of the latest (or given) checkpoint, restored onto
    the shapes and shardings of ``target`` (``stiv_jax.train.setup.load_train_state`` builds it)."""
    wd = as_workdir(workdir)
    with ocp.CheckpointManager(wd.checkpoints, options=_READ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {wd.checkpoints}")
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return state, step


def _steps_text(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 12 else f"{steps[0]}, …, {', '.join(map(str, steps[-10:]))}"


def _reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {one_line(e).split(' [tensorstore_spec=')[0]}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _closed_loop(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_closed_loop_callbacks() -> None:
    """Tensorstore reads still in flight when a restore fails complete into orbax's closed asyncio
    loop, each raising ``RuntimeError: Event loop is closed`` from a callback thread (reported
    through ``sys.unraisablehook``, ``sys.excepthook`` or ``threading.excepthook``, whichever
    prints it); drop exactly those, everything else still reaches the previous hooks."""
    if getattr(sys.unraisablehook, "_stiv_quiet", False):
        return
    unraisable, excepthook, thread_hook = sys.unraisablehook, sys.excepthook, threading.excepthook

    def on_unraisable(info: Any) -> None:
        if not _closed_loop(info.exc_value):
            unraisable(info)

    def on_exception(exc_type, value, tb) -> None:
        if not _closed_loop(value):
            excepthook(exc_type, value, tb)

    def on_thread_exception(args: Any) -> None:
        if not _closed_loop(args.exc_value):
            thread_hook(args)

    on_unraisable._stiv_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook, sys.excepthook, threading.excepthook = on_unraisable, on_exception, on_thread_exception


def _quiet_failed_reads() -> None:
    """After a failed restore, the reads that failed alongside are garbage-collected unretrieved,
    and asyncio logs each ("Task/Future exception was never retrieved") at exit: the error already
    names the step, so asyncio's log is cut to critical messages from here on."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def restore_params(
    workdir: str | os.PathLike | Workdir, ema: bool = True, step: int | None = None
) -> tuple[dict[str, Any], int]:
    """``(params, step)``: the EMA (default) or raw parameters of the latest (or given) checkpoint,
    as numpy.

    A *partial* restore of just that subtree (structure from the item's metadata, arrays read as
    host numpy): no mesh, devices or optimizer state are needed, so a checkpoint written by a
    sharded multi-host run loads the same way on a laptop. Used by the sampler, export and
    progressive init. Raises :class:`CheckpointError` naming the step and the available ones when
    ``step`` is not there or its files cannot be read (a damaged or half-copied checkpoint).
    """
    import numpy as np

    wd = as_workdir(workdir)
    if not wd.checkpoints.exists():
        raise FileNotFoundError(f"{wd.checkpoints}: no checkpoint directory")
    key = "ema_params" if ema else "params"
    with ocp.CheckpointManager(
        wd.checkpoints, item_handlers={"state": ocp.PyTreeCheckpointHandler()}, options=_READ
    ) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise CheckpointError(f"{wd.checkpoints}: no checkpoint")
        chosen = steps[-1] if step is None else int(step)
        if chosen not in steps:
            raise CheckpointError(
                f"no checkpoint at step {chosen} in {wd.checkpoints}; available steps: {_steps_text(steps)}"
            )
        # Installed before reading: a failing read's siblings can complete while the error is
        # still propagating (seen in CI: the traceback landed before the hook was installed).
        _quiet_closed_loop_callbacks()
        try:
            tree = manager.item_metadata(chosen)["state"]
            tree = getattr(tree, "tree", tree)
            if tree is None or key not in tree:
                raise ValueError(
                    f"{wd.checkpoints}/{chosen}/state: no {key!r} subtree (found {sorted(tree) if tree else []})"
                )
            target = {key: tree[key]}
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
            args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
            params = manager.restore(chosen, args=ocp.args.Composite(state=args))["state"][key]
        except Exception as e:
            _quiet_failed_reads()
            others = [s for s in steps if s != chosen]
            hint = f"other steps: {_steps_text(others)} (--step=N)" if others else "there is no other step"
            raise CheckpointError(
                f"checkpoint step {chosen} in {wd.checkpoints} cannot be read ({_reason(e)}); {hint}"
            ) from e
    return params, chosen
