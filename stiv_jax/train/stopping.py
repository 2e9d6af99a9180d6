"""When training stops early: a signal or a preemption notice, decided by every process together.

- One process: SIGTERM / SIGINT set a flag that is read after every step.
- Several processes: a signal reaches one process (a preemption notice, ``kill``, Ctrl-C), but
  all must stop after the same step and take part in the same checkpoint save, or they deadlock
  in its barrier. JAX's preemption service (on whenever ``jax.distributed`` is initialised, on
  every platform) catches SIGTERM, tells every process, and
  ``multihost_utils.reached_preemption_sync_point(step)``, called after every step by all of them,
  is true on all at one step. SIGINT (and SIGTERM when that service is off) set a local flag that
  :func:`~stiv_jax.parallel.distributed.any_process` ORs across processes every
  ``check_every`` steps (a small collective).

The NaN/inf stop needs no vote: it reads ``first_bad_step`` from the replicated train state at
the same steps on every process.
"""

from __future__ import annotations

import signal

import jax

from stiv_jax.parallel.distributed import any_process


def _preemption_service() -> bool:
    """Whether ``jax.distributed`` runs JAX's preemption sync manager (no public accessor)."""
    try:
        from jax._src import distributed

        state = distributed.global_state
        return state.client is not None and state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False


class StopSignal:
    """Context manager; :meth:`should_stop` after every step (every process must call it)."""

    def __init__(self, check_every: int = 10):
        self.check_every = max(1, int(check_every))
        self.received: int | None = None
        self.reason = ""
        self._old = {}
        self._service = False
        self._multi = False

    def __enter__(self) -> StopSignal:
        self._service = _preemption_service()
        self._multi = jax.process_count() > 1
        # With the preemption service, SIGTERM belongs to it: a Python handler would replace it.
        for sig in (signal.SIGINT,) if self._service else (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def should_stop(self, step: int) -> bool:
        """True on every process at the same ``step`` once any of them was told to stop."""
        stop = False
        if self._service:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                stop, self.reason = True, "a preemption notice (SIGTERM)"
        if not self._multi:
            flagged = self.received is not None
        elif step % self.check_every == 0:
            flagged = any_process(self.received is not None)
        else:
            flagged = False
        if flagged and not stop:
            local = f"signal {self.received}" if self.received is not None else "a signal to another process"
            stop, self.reason = True, local
        return stop
