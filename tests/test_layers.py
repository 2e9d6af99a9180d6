"""The package's layers (README "Layout"): imports only go down, and no module imports itself back.

Every ``import`` of ``stiv_jax`` in the package is read from the source (also the ones inside
functions), so a lazy import cannot hide an upward arrow.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "stiv_jax"

# Bottom to top. A sub-package may import its own modules and any sub-package of a lower layer;
# sub-packages of one layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # the one error base class
    ("parallel", "console"),  # mesh + logical axis rules + processes; how programs report errors and parse flags
    ("storage",),  # local / gs:// paths, the run directory, checkpoints on disk
    ("weights", "flow"),  # pretrained-weight I/O and conversion; flow matching (the paper's §2.1)
    ("model",),  # the STIV DiT
    ("text", "vae"),  # frozen prompt encoders and frame autoencoders (networks + converters)
    ("encoders",),  # the one encoder builder, pretrained directories, the conditioner
    ("data",),  # shards, the Grain pipeline, the latent cache
    ("eval",),  # FVD, FID, CLIP score: feature networks, pinned protocols, Fréchet distance
    ("sampling",),  # the sampler
    ("train",),  # the trainer (it samples for evaluation during training)
    ("export",),  # PyTorch export
    ("apps", "bench"),  # the demo, its report and probe; benchmarks
    ("cli",),  # console scripts: flags → library calls
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Absolute names of the ``stiv_jax`` modules (or packages) ``path`` imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from pkg import module` imports pkg.module
                name = f"{base}.{alias.name}"
                found.add(
                    name
                    if (ROOT.parent / (name.replace(".", "/") + ".py")).exists()
                    or (ROOT.parent / name.replace(".", "/")).is_dir()
                    else base
                )
    return {name for name in found if name == "stiv_jax" or name.startswith("stiv_jax.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    loose = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert subpackages | loose == set(RANK), "a new sub-package or top-level module needs a place in LAYERS"


def test_imports_only_go_down():
    upward = []
    for module, imported in _graph().items():
        here = _package(module)
        for name in imported:
            there = _package(name)
            if here is None or there is None or here == there:
                continue
            if RANK[there] >= RANK[here]:
                upward.append(f"{module} -> {name} ({here}: layer {RANK[here]}, {there}: layer {RANK[there]})")
    assert not upward, "imports that do not go down a layer:\n  " + "\n  ".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for name in sorted(graph.get(module, ())):
            if name not in graph:
                continue
            if state.get(name) == 1:
                cycle = stack[stack.index(name) :] + [name]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if name not in state:
                visit(name)
        stack.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)


def test_the_checker_sees_upward_and_lazy_imports(tmp_path, monkeypatch):
    """The checker itself: a lazy upward import inside a function is found."""
    fake = tmp_path / "stiv_jax"
    (fake / "model").mkdir(parents=True)
    (fake / "train").mkdir()
    for p in (fake, fake / "model", fake / "train"):
        (p / "__init__.py").write_text("")
    (fake / "train" / "loop.py").write_text("")
    (fake / "model" / "dit.py").write_text("def f():\n    from stiv_jax.train import loop\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert _imports(fake / "model" / "dit.py") == {"stiv_jax.train.loop"}
    with pytest.raises(AssertionError, match=r"stiv_jax.model.dit -> stiv_jax.train.loop"):
        test_imports_only_go_down()
