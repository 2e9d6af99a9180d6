"""One training run per run directory: ``WORKDIR/lock.json``.

Process 0 of a run writes ``{host, pid, started, heartbeat, token}``, refreshes ``heartbeat``
every ``heartbeat_secs`` from a background thread, and removes the file when training ends. A
second trainer on the same workdir is refused with a message naming the holder, unless the lock
is stale: its process is gone (same host) or its heartbeat is older than ``stale_after_secs``
(another host, e.g. a preempted slice). The path layer has no atomic create-if-absent on object
storage, so the lock is read back after a short pause: of two trainers that write it at the same
moment the later one keeps it and the other is refused.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid

from stiv_jax.errors import UserError
from stiv_jax.storage import paths
from stiv_jax.storage.workdir import LOCK, Workdir


class WorkdirLocked(UserError):
    """Another live training process holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    def __init__(
        self,
        workdir: Workdir,
        *,
        heartbeat_secs: float = 30.0,
        stale_after_secs: float = 180.0,
        settle_secs: float = 0.5,
    ):
        self.path = workdir.file(LOCK)
        self.heartbeat_secs, self.stale_after_secs, self.settle_secs = heartbeat_secs, stale_after_secs, settle_secs
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(paths.read_text(self.path))
        except FileNotFoundError:
            return None
        except ValueError:  # a half-written or foreign file: treat as stale
            return {}

    def _write(self) -> None:
        paths.write_text(self.path, json.dumps({**self.record, "heartbeat": time.time()}))

    def stale_reason(self, held: dict) -> str | None:
        """Why ``held`` no longer counts (None: its holder is alive)."""
        if not held or "pid" not in held:
            return "it is unreadable"
        if held.get("host") == self.record["host"] and not _alive(int(held["pid"])):
            return f"process {held['pid']} on this host is gone"
        age = time.time() - float(held.get("heartbeat", 0))
        if age > self.stale_after_secs:
            return f"its heartbeat is {age:.0f} s old"
        return None

    def _refusal(self, held: dict) -> WorkdirLocked:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(held.get("started", 0))))
        age = time.time() - float(held.get("heartbeat", 0))
        return WorkdirLocked(
            f"{self.path}: the workdir is in use by process {held.get('pid')} on host {held.get('host')} "
            f"(since {since}, last heartbeat {age:.0f} s ago); stop that run first, or use another "
            f"--workdir (a lock whose process is gone, or {self.stale_after_secs:.0f} s without a "
            "heartbeat, is taken over)"
        )

    def acquire(self) -> None:
        held = self._read()
        if held is not None and held.get("token") != self.record["token"]:
            reason = self.stale_reason(held)
            if reason is None:
                raise self._refusal(held)
            print(
                f"Warning: taking over the stale lock {self.path} of process {held.get('pid')} on "
                f"{held.get('host')} ({reason}).",
                file=sys.stderr,
                flush=True,
            )
        self._write()
        time.sleep(self.settle_secs)
        held = self._read()
        if held is None or held.get("token") != self.record["token"]:
            raise self._refusal(held or {})
        self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_secs):
            try:
                held = self._read()
                if not held or held.get("token") != self.record["token"]:
                    print(
                        f"Warning: {self.path} was taken by another process; no longer refreshed.",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
                self._write()
            except OSError as e:  # a storage hiccup: try again at the next beat
                print(f"Warning: could not refresh {self.path}: {e}", file=sys.stderr, flush=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        held = self._read()
        if held and held.get("token") == self.record["token"]:
            paths.as_path(self.path).unlink()

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
