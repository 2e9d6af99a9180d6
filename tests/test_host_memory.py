"""Keeping freed host memory (stiv_jax/console/host_memory.py) stops the re-faulting of large
temporaries, in the process that applies it and in the processes it starts.

Each case runs in a fresh interpreter (the settings are process-wide); the page faults are the
kernel's own count (``getrusage``), the reference is glibc's default behaviour in the same run.
"""

import json
import os
import subprocess
import sys

import pytest

from stiv_jax.console import host_memory

# Allocates and frees a 64 MiB array (every page written) six times, in this process and then in
# a spawned child; prints each iteration's minor page faults and the child's host_memory.current().
SCRIPT = r"""
import json, multiprocessing, resource, sys

def faults(_=None):
    import numpy as np
    out = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones((64 << 20) // 8)
        b = a * 2.0
        del a, b
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    from stiv_jax.console import host_memory
    return out, host_memory.current()

if __name__ == "__main__":
    if sys.argv[1] == "keep":
        from stiv_jax.console import host_memory
        host_memory.keep_freed_memory()
    mine, mode = faults()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child, child_mode = pool.map(faults, [0])[0]
    print(json.dumps(dict(mine=mine, mode=mode, child=child, child_mode=child_mode)))
"""


def _run(tmp_path, mode: str, env: dict[str, str]) -> dict:
    script = tmp_path / "faults.py"
    script.write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc settings")
def test_keeping_freed_memory_stops_refaulting(tmp_path):
    default = _run(tmp_path, "default", {})
    kept = _run(tmp_path, "keep", {})  # mallopt in the process, environment for the child
    by_env = _run(tmp_path, "default", host_memory.environment())  # glibc reads them at start-up
    # glibc's defaults: every 64 MiB allocation is mmapped afresh and faulted in again.
    steady = min(default["mine"][1:] + default["child"][1:])
    assert steady >= 100, default
    assert default["mode"] == default["child_mode"] == "default"
    for case in (kept, by_env):
        # After the first allocation the memory stays in the process: (almost) no faults.
        assert max(case["mine"][1:]) <= steady // 20, (case, default)
        assert max(case["child"][1:]) <= steady // 20, (case, default)
        assert case["mode"] == case["child_mode"] == "keep"
