"""Timing helpers shared by the benchmarks: interleaved medians, paired ratios, the machine's
matmul rate, and the load guard.

Shared machines are noisy, so every comparison is measured *in one run*: the candidates are
called round-robin (A B A B …) after a warm-up; a ratio is the median of the per-round ratios
(:meth:`Timings.paired_ratio`), each round's two runs having seen the same machine.

A figure taken on a loaded machine is not a result. :class:`LoadWatch` records the 1-minute load
average and the core count before and after, and the CPU time *other* processes used meanwhile
(``/proc/stat`` busy time minus this process's and its workers'). Every benchmark's last line
(:func:`headline`) carries these fields, ``quiet=yes|no`` and ``malloc=keep|default`` (whether
the process keeps freed host memory, stiv_jax/console/host_memory.py); run from ``stiv-bench``, a loaded
machine (load before > cores, or others using > ``OTHERS_LIMIT`` cores on average) ends the
command with an error unless ``--allow_loaded``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.console import host_memory
from stiv_jax.errors import UserError


def cpu_threads() -> int:
    """Cores this process may use (what XLA's CPU client sizes its thread pool by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``; 0 where there is none): memory
    the kernel had to map and zero, e.g. temporaries handed back to it and allocated again."""
    try:
        import resource
    except ImportError:  # not Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine() -> str:
    """One line naming the device and host, for the benchmark header."""
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f" load={os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"device={dev.platform}:{dev.device_kind} host_cpu={cpu!r} threads={cpu_threads()}{load}"


@dataclasses.dataclass
class Timings:
    """Seconds per call for each named candidate, in call order, and the process's CPU seconds
    (all threads, user + system) during each call."""

    seconds: dict[str, list[float]]
    cpu_seconds: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> float:
        """(max − min) / median: how noisy the candidate's runs were."""
        s = self.seconds[name]
        return (max(s) - min(s)) / statistics.median(s)

    def paired_ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of ``numerator_i / denominator_i`` (runs of one round are adjacent)."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def cores(self, name: str) -> float:
        """Median over calls of CPU seconds ÷ wall seconds: how many cores the candidate kept busy."""
        pairs = zip(self.cpu_seconds[name], self.seconds[name], strict=True)
        return statistics.median(c / w for c, w in pairs)


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    """Calls each (blocking) function ``warmup`` times, then ``repeats`` rounds of A, B, … in turn."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            out[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return Timings(out, cpu)


def _matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...], dtype) -> tuple[Callable[[], object], float]:
    """A blocking jitted ``a @ b`` of random operands (compiled and run once) and its FLOPs:
    2 · output elements · contracted size."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal(shape), dtype) for shape in (a_shape, b_shape))
    dot = jax.jit(jnp.matmul)
    out = jax.block_until_ready(dot(a, b))
    return (lambda: jax.block_until_ready(dot(a, b))), 2.0 * out.size * a_shape[-1]


def matmul_fn(n: int = 2048, dtype=jnp.float32) -> tuple[Callable[[], object], float]:
    """A blocking ``n×n @ n×n`` jitted matmul and its FLOPs (2n³), for the machine's dense rate."""
    return _matmul((n, n), (n, n), dtype)


def batched_matmul_fn(batch: int, n: int, d: int, dtype=jnp.float32) -> tuple[Callable[[], object], float]:
    """A blocking batched ``[batch, n, d] @ [batch, d, n]`` jitted matmul (the shape of attention's
    QKᵀ: ``batch`` = sequences × heads, ``n`` tokens, ``d`` head width) and its FLOPs (2·batch·n²·d)."""
    return _matmul((batch, n, d), (batch, d, n), dtype)


def fmt(x: float) -> str:
    """Compact number formatting for ``key=value`` lines."""
    return f"{x:.4g}"


def report(**items) -> str:
    """``key=value key=value`` (floats with 4 significant digits)."""
    return " ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in items.items())


OTHERS_LIMIT = 0.25  # cores other processes may use on average while a figure is taken
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float | None:
    """CPU-seconds every core spent busy since boot (``/proc/stat``), None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def _process_seconds(pid: int) -> float:
    """CPU-seconds (user + system, all threads) of a live process; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class MachineLoaded(UserError):
    """The machine was loaded while a figure was taken (see the module docstring)."""


class LoadWatch:
    """Load average and other processes' CPU use over a measurement (module docstring)."""

    def __init__(self, pids: Iterable[int] = ()):
        self.cores = cpu_threads()
        self.pids = {os.getpid(), *pids}
        self._seen: dict[int, float] = {}  # last CPU-seconds read per pid (kept after it exits)
        self.load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self._start = (time.perf_counter(), _busy_seconds(), self._ours())

    def _ours(self) -> float:
        return sum(self._read(p) for p in self.pids)

    def _read(self, pid: int) -> float:
        self._seen[pid] = max(self._seen.get(pid, 0.0), _process_seconds(pid))
        return self._seen[pid]

    def sample(self) -> None:
        """Reads the workers' CPU time now (call it before they exit: an exited process's time
        can no longer be read)."""
        self._ours()

    def add_pids(self, pids: Iterable[int]) -> None:
        """Counts ``pids`` (benchmark workers) as this measurement's own processes."""
        new = set(pids) - self.pids
        self.pids |= new
        wall, busy, ours = self._start
        self._start = (wall, busy, ours + sum(self._read(p) for p in new))

    def fields(self) -> dict[str, object]:
        """``load_before``, ``load_after``, ``cores``, ``others_cpu`` (cores, mean), ``quiet``."""
        wall, busy, ours = self._start
        now_busy = _busy_seconds()
        others = float("nan")
        if busy is not None and now_busy is not None:
            elapsed = max(time.perf_counter() - wall, 1e-9)
            others = max(0.0, (now_busy - busy) - (self._ours() - ours)) / elapsed
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        quiet = not (self.load_before > self.cores or others > OTHERS_LIMIT)
        return dict(
            load_before=round(self.load_before, 2),
            load_after=round(load_after, 2),
            cores=self.cores,
            others_cpu=round(others, 2),
            quiet="yes" if quiet else "no",
        )


_watch: LoadWatch | None = None
_strict = False  # set by stiv-bench: a loaded machine is an error unless --allow_loaded


def watch(pids: Iterable[int] = ()) -> LoadWatch:
    """The current benchmark's :class:`LoadWatch` (started on first use); ``pids`` join it."""
    global _watch
    if _watch is None:
        _watch = LoadWatch(pids)
    else:
        _watch.add_pids(pids)
    return _watch


def settle(max_wait_s: float = 120.0, poll_s: float = 5.0, sleep=time.sleep) -> float:
    """Waits (at most ``max_wait_s``) for the 1-minute load average to fall to the core count —
    it decays over about a minute after the previous benchmark, ours included; returns the load."""
    load, waited = os.getloadavg()[0], 0.0
    if load > cpu_threads():
        print(
            f"waiting up to {max_wait_s:.0f}s for the load average ({load:.2f}) to fall to {cpu_threads()}", flush=True
        )
    while load > cpu_threads() and waited < max_wait_s:
        sleep(poll_s)
        waited += poll_s
        load = os.getloadavg()[0]
    return load


def guard(strict: bool) -> None:
    """Lets the machine settle (up to ``$STIV_BENCH_SETTLE_S``, default 120 s), then starts a fresh
    watch for one command; ``strict``:
    :func:`headline` raises when loaded."""
    global _watch, _strict
    if hasattr(os, "getloadavg"):
        settle(float(os.environ.get("STIV_BENCH_SETTLE_S", "120")))
    _watch, _strict = LoadWatch(), strict


def headline(text: str) -> str:
    """Prints the benchmark's last line, ``text`` plus the load fields; raises
    :class:`MachineLoaded` on a loaded machine under :func:`guard` ``(strict=True)``."""
    global _watch
    fields = watch().fields()
    _watch = None  # the next figure gets a watch of its own
    line = f"{text} {report(**fields, malloc=host_memory.current())}"
    print(line, flush=True)
    if fields["quiet"] != "yes" and _strict:
        raise MachineLoaded(
            f"the machine was loaded (load average {fields['load_before']} before on {fields['cores']} cores, "
            f"other processes used {fields['others_cpu']} cores): the figure is not a result; rerun on a quiet "
            "machine, or pass --allow_loaded to keep it"
        )
    return line
