"""Console scripts exit 0 on success: setuptools' wrappers do ``sys.exit(fn())``, so an entry
point that returns a value (a path, a list) makes a successful run exit 1 (it did, for weeks).
The subprocess tests (test_gcs.py, test_multiprocess.py) check real runs' exit codes."""

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


@pytest.mark.parametrize("script,target", sorted(_entry_points().items()))
def test_entry_point_returns_nothing(script, target):
    """Read from the source (importing every CLI into one process would clash absl flags)."""
    module, fn = target.split(":")
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn]
    assert isinstance(func.returns, ast.Constant) and func.returns.value is None, (
        f"{script} -> {target} must be '-> None'"
    )
    returns = [n for n in ast.walk(func) if isinstance(n, ast.Return) and n.value is not None]
    assert not returns, f"{script} -> {target} returns a value: its exit status would be 1"


def test_installed_script_help_exits_0():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "stiv-sample"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "stiv-sample" in proc.stdout, proc.stderr
