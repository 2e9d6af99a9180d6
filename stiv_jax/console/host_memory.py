"""Host memory for XLA on CPU: keep freed memory in the process instead of handing it back.

XLA's CPU runtime allocates a step's temporaries afresh on every execution. With glibc's default
malloc, blocks that large are ``mmap``ed and unmapped (or trimmed off the thread arenas' heaps),
so every step faults in and zeroes its temporaries again: on the ``stiv-bench latte`` workload
1.5 million page faults and ~30% of the step's CPU time (docs/results.md, "Where that time went:
page faults"). :func:`keep_freed_memory` sets glibc to one arena, no ``mmap`` for large blocks, no
trimming and a 1 GiB top pad; the process then keeps its peak host memory mapped. Accelerator
memory is not affected. One arena serialises the allocations of every thread, which costs more
than it saves when a step's temporaries are small (the demo's training ran 1.3× slower with it),
so this is ``stiv-bench``'s default (``--malloc``), not the trainer's.
"""

from __future__ import annotations

import ctypes
import os
import platform

from stiv_jax.errors import UserError

# (environment variable glibc reads at start-up, its value, mallopt parameter, mallopt's value: an
# int, so "never trim" is -1 there, as `man mallopt` documents, and 64 GiB in the environment)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
SETTINGS: tuple[tuple[str, int, int, int], ...] = (
    ("MALLOC_ARENA_MAX", 1, _M_ARENA_MAX, 1),
    ("MALLOC_MMAP_MAX_", 0, _M_MMAP_MAX, 0),
    ("MALLOC_TRIM_THRESHOLD_", 64 << 30, _M_TRIM_THRESHOLD, -1),
    ("MALLOC_TOP_PAD_", 1 << 30, _M_TOP_PAD, 1 << 30),
)
MODES = ("keep", "default")


def environment() -> dict[str, str]:
    """The settings as environment variables, for processes started from this one."""
    return {name: str(value) for name, value, _, _ in SETTINGS}


def current() -> str:
    """``keep`` when this process runs with the settings (from its environment or
    :func:`keep_freed_memory`), else ``default``: the ``malloc=`` field of benchmark lines."""
    return "keep" if all(os.environ.get(k) == v for k, v in environment().items()) else "default"


def keep_freed_memory() -> None:
    """Applies the settings to this process (``mallopt``) and to the processes it starts (their
    environment). Call it before JAX runs its first computation: the arena limit holds only for
    threads that have not allocated yet. Raises :class:`UserError` where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        raise UserError(
            f"--malloc=keep needs glibc (this is {platform.system()} {platform.libc_ver()[0] or 'no glibc'})"
        )
    libc = ctypes.CDLL("libc.so.6")
    for name, _, param, value in SETTINGS:
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            raise UserError(f"--malloc=keep: mallopt refused {name} ({param}, {value})")
    os.environ.update(environment())
