"""stiv-aot: the real train step compiled ahead of time for a TPU topology on this CPU host."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def aot(*args, timeout=900, rc=0):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    proc = subprocess.run(
        [sys.executable, "-m", "stiv_jax.cli.aot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == rc, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(
        r"per_device_total_bytes=(\d+) flops_per_step=([0-9.e+]+) capacity_bytes=(\d+) fits=(yes|no)", last
    )
    assert m, last
    if rc:
        errors = proc.stderr.strip().splitlines()  # libtpu warns about the missing TPU before it
        ours = [line for line in errors if line.startswith("stiv-aot")]
        assert ours == errors[-1:] and "exceeds" in ours[0] and "Traceback" not in proc.stderr, errors
    assert m.group(4) == ("no" if rc else "yes") and int(m.group(3)) > 0
    return proc.stdout, int(m.group(1)), float(m.group(2))


def test_aot_tiny_config_on_v5e_2x2():
    # A chip too small for the compiled step: the report, then one error line and exit status 2.
    out, total, flops = aot(
        "--config=experiments/tiny_synthetic.py", "--topology=v5e:2x2", "--capacity_gib=0.0001", rc=2
    )
    assert "v5e:2x2 (4 devices)" in out and "'fsdp': 4" in out
    assert 0 < total < 2**30 and flops > 0
    # On a real v5e chip it fits; doubling the batch doubles the model FLOPs (XLA's buffer totals
    # need not grow monotonically).
    _, total2, flops2 = aot("--config=experiments/tiny_synthetic.py", "--topology=v5e:2x2", "--config.batch_size=16")
    assert flops2 == pytest.approx(2 * flops, rel=1e-9) and total2 > 0


@pytest.mark.slow
def test_aot_t2v_m_512_fits_a_v5e_256():
    """The memory figure of docs/training.md: STIV-M (8.7B) at 512², 20 frames, MaskDiT, the paper's
    1024-clip batch on a v5e-256 fits the 15.75 GiB a v5e chip gives XLA (experiments/paper.py's v5e settings)."""
    out, total, _ = aot("--config=experiments/t2v_m_512.py", "--topology=v5e:16x16", timeout=5400)
    assert "(256 devices)" in out and "batch           4 per device" in out
    assert 0 < total < 15.75 * 2**30, out
    print(out)
