"""The error convention of stiv-sample, stiv-export-torch, stiv-import and stiv-make-demo-data,
through the installed console scripts: a known error is one ``prog: error: …`` line on stderr and
exit status 2 (it was a traceback or ``sys.exit(msg)``, status 1); ``--verbose`` or
``STIV_VERBOSE=1`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
    )


CASES = {
    "demo-data-num-videos": (
        "stiv-make-demo-data",
        ["--out={tmp}/demo", "--num_videos=0"],
        "--num_videos must be >= 1, got 0",
    ),
    "demo-data-fps": (
        "stiv-make-demo-data",
        ["--out={tmp}/demo", "--fps=nan"],
        "--fps must be a frame rate in [0.01, 1000], got nan",
    ),
    "sample-workdir": (
        "stiv-sample",
        ["--workdir={tmp}/none", "--prompt=x", "--out={tmp}/x.mp4"],
        "workdir '{tmp}/none' does not exist",
    ),
    "export-workdir": (
        "stiv-export-torch",
        ["--workdir={tmp}/none", "--out={tmp}/m.safetensors"],
        "{tmp}/none/config.json: no training config",
    ),
    "import-weights": (
        "stiv-import",
        ["--kind=t5", "--weights={tmp}/none.safetensors", "--config=t5-v1_1-base", "--out={tmp}/o"],
        "weights not found: {tmp}/none.safetensors",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_known_error_is_one_line_and_exit_status_2(tmp_path, case):
    name, args, message = CASES[case]
    proc = script(name, *(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 2 and not proc.stdout, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith(f"{name}: error: {message.format(tmp=tmp_path)}")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize("case,how", [("demo-data-fps", "env"), ("export-workdir", "flag")])
def test_verbose_shows_the_traceback(tmp_path, case, how):
    name, args, message = CASES[case]
    args = [a.format(tmp=tmp_path) for a in args] + (["--verbose"] if how == "flag" else [])
    proc = script(name, *args, env={"STIV_VERBOSE": "1"} if how == "env" else None)
    assert proc.returncode == 1 and proc.stderr.startswith("Traceback (most recent call last):"), proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr.splitlines()[-1]


def test_what_counts_as_a_known_error():
    """Disk and permission errors are the user's; a ValueError from a library is a bug; ours is not."""
    import errno

    from stiv_jax.console.errors import is_known
    from stiv_jax.errors import ConfigError

    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOTDIR, errno.ENOENT):
        assert is_known(OSError(code, os.strerror(code), "/some/workdir/config.json"))
    assert not is_known(OSError(errno.EIO, "I/O error"))
    assert is_known(ConfigError("config.x=1 must be >= 2"))
    try:
        import numpy as np

        np.zeros(3).reshape(2)  # a ValueError raised inside numpy: a bug of the caller, not the user's
    except ValueError as e:
        assert not is_known(e)
    try:
        from experiments.tiny_synthetic import get_config
        from stiv_jax.train.config import validate

        c = get_config()
        c.num_train_steps = 0
        validate(c)
    except ValueError as e:
        assert is_known(e)
    else:
        raise AssertionError("validate accepted num_train_steps=0")
