"""Where the reference implementations used only by tests live.

open_clip (its CLIP tokenizer) and torch-fidelity (its FID InceptionV3) are installed by ``make``
without their dependencies into ``.venv/references`` (see the Makefile), not into site-packages:
their dependencies would replace the CPU PyTorch, and torch-fidelity's wheel also ships a top-level
``tests`` package that would shadow this folder's modules. Elsewhere they may be installed normally.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

FOLDER = os.path.join(sys.prefix, "references")


def package_dir(name: str) -> str:
    """The folder of package ``name`` (nothing of it is imported); fails the test if it is absent
    (a missing reference must not pass as a skipped check)."""
    path = os.path.join(FOLDER, name)
    if os.path.isdir(path):
        return path
    spec = importlib.util.find_spec(name)  # locates an installed package without executing it
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"reference package {name} is not installed: `make venv` installs it into {FOLDER}")
    return spec.submodule_search_locations[0]
