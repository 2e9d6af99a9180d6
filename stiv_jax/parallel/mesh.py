"""Device mesh and parameter/batch shardings.

The mesh has axes ``('data', 'fsdp', 'tensor')`` in Auto mode (GSPMD-style propagation from the
shardings we give; ``jax.make_mesh`` defaults to Explicit since jax 0.9, so the types are passed
explicitly). Parameter shardings come from each parameter's logical axis names through the rule
table (stiv_jax/parallel/rules.py). A dimension that a mesh axis does not divide is replicated
along that axis rather than failing, so tiny CPU models run on any simulated mesh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stiv_jax.parallel.rules import Rules, logical_to_spec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_SPEC = P(("data", "fsdp"))


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
    """Sizes for ``('data', 'fsdp', 'tensor')``; at most one may be -1 (= the remaining devices)."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"config.mesh: {num_devices} devices not divisible by {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {num_devices}"
        )
    return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes that do not divide their dimension (or are absent/size 1)."""
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
        kept, size = [], 1
        for a in axes:
            n = mesh.shape.get(a, 1)
            if n > 1 and dim % (size * n) == 0:
                kept.append(a)
                size *= n
        out.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
    return P(*out)


def logical_axes(module_or_state: Any) -> dict:
    """Pure dict (like ``nnx.to_pure_dict``) of each parameter's logical axis names."""
    state = module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(module_or_state, nnx.Param)
    flat = {tuple(p): v.get_metadata().get("out_sharding") for p, v in nnx.to_flat_state(state)}
    return _unflatten(flat)


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


def shardings_for(shapes: Any, axes: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """NamedShardings for a tree of arrays/ShapeDtypeStructs given a matching tree of logical axes."""
    return jax.tree.map(
        lambda s, names: NamedSharding(mesh, _fit(logical_to_spec(names, rules), tuple(s.shape), mesh)),
        shapes,
        axes,
        is_leaf=lambda x: isinstance(x, tuple) or x is None,
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_SPEC[0], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
