"""Timing helpers shared by the benchmarks: interleaved medians and the machine's matmul rate.

Shared machines are noisy, so every comparison is measured *in one run*: the candidates are
called round-robin (A B A B …) after a warm-up, and each is summarised by its median. A ratio of
two medians taken this way is far more stable than either time alone.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def cpu_threads() -> int:
    """Cores this process may use (what XLA's CPU client sizes its thread pool by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    """Seconds per call for each named candidate, in call order."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> float:
        """(max − min) / median: how noisy the candidate's runs were."""
        s = self.seconds[name]
        return (max(s) - min(s)) / statistics.median(s)


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    """Calls each (blocking) function ``warmup`` times, then ``repeats`` rounds of A, B, … in turn."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return Timings(out)


def matmul_fn(n: int = 2048, dtype=jnp.float32) -> tuple[Callable[[], object], float]:
    """A blocking ``n×n @ n×n`` jitted matmul and its FLOPs (2n³), for the machine's dense rate."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((n, n)), dtype) for _ in range(2))
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    return (lambda: jax.block_until_ready(dot(a, b))), 2.0 * n**3


def fmt(x: float) -> str:
    """Compact number formatting for ``key=value`` lines."""
    return f"{x:.4g}"


def report(**items) -> str:
    """``key=value key=value`` (floats with 4 significant digits)."""
    return " ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in items.items())
