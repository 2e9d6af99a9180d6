"""Parameter surgery: copy parameters between models by path (T2I → T2V inflation, §2.4).

Paths are tuples of attribute names, e.g. ``('blocks', 'temporal_attn', 'q', 'kernel')``.
Shapes must match exactly; RoPE needs no weights, so interpolation to a new grid is a config
change (``model.rope_ref_grid``).
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

Path = tuple[str, ...]


def param_paths(model: nnx.Module) -> dict[Path, nnx.Variable]:
    """``{path: Variable}`` for every parameter of ``model``."""
    return {tuple(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def transplant(target: nnx.Module, source: nnx.Module, select: Callable[[Path], bool] = lambda p: True) -> list[Path]:
    """Copies every selected parameter of ``source`` that ``target`` also has; returns the paths.

    Raises ``ValueError`` naming the path on a shape mismatch.
    """
    dst = param_paths(target)
    copied = []
    for path, var in param_paths(source).items():
        if path in dst and select(path):
            if dst[path].shape != var.shape:
                raise ValueError(f"shape mismatch at {'.'.join(path)}: target {dst[path].shape} vs source {var.shape}")
            dst[path][...] = var[...]
            copied.append(path)
    return copied


def is_temporal(path: Path) -> bool:
    """Parameters that exist only in video models (temporal attention)."""
    return "temporal_attn" in path
