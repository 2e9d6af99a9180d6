"""Where the reference implementations used only by tests live.

open_clip (its CLIP tokenizer), torch-fidelity (its FID InceptionV3) and scikit-image (its SSIM, with
lazy_loader) are installed by ``make`` without their dependencies into ``.venv/references`` (see the
Makefile), not into site-packages: their dependencies would replace the CPU PyTorch, and
torch-fidelity's wheel also ships a top-level ``tests`` package that would shadow this folder's
modules. Elsewhere they may be installed normally.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

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


class _ReferenceFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in ``FOLDER`` after every other finder (so after site-packages), never
    ``tests``: appending FOLDER to ``sys.path`` would not do, as torch-fidelity's regular ``tests``
    package would win over this repository's namespace package ``tests`` wherever it sits on the path."""

    def find_spec(self, name, path, target=None):
        if path is not None or name == "tests":  # submodules are found through their package's __path__
            return None
        return importlib.machinery.PathFinder.find_spec(name, [FOLDER])


def import_reference(name: str) -> types.ModuleType:
    """Imports module ``name`` of a reference package, installed normally or in ``FOLDER`` (searched
    last); fails the test if the package is absent (a missing reference must not pass as a skipped check)."""
    if not any(isinstance(finder, _ReferenceFinder) for finder in sys.meta_path):
        sys.meta_path.append(_ReferenceFinder())
    top = name.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        pytest.fail(f"reference package {top} is not installed: `make venv` installs it into {FOLDER}")
    return importlib.import_module(name)
