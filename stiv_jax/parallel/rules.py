"""Logical axis names and their mapping onto the device mesh (MaxText style).

Every parameter carries logical axis names (``nnx.with_partitioning(init, names)``) and large
activations are constrained with :func:`constrain`. A rule table maps each logical name to a mesh
axis (or a tuple of them, or ``None`` for replicated); the table lives in the config
(``config.sharding_rules``) so FSDP, tensor parallelism or pure data parallelism are a config edit.

Mesh axes are ``('data', 'fsdp', 'tensor')``. Logical names used in this code base:

- parameters: ``embed`` (model width d), ``mlp`` (MLP hidden), ``heads`` (flattened heads×head_dim),
  ``text_embed`` (text-encoder width), ``cond`` (per-condition features), ``vocab``, ``layers``
  (the stacked/scanned layer axis), ``norm`` (small vectors), ``conv_in``/``conv_out`` (VAE).
- activations: ``batch``, ``length`` (sequence), ``act_embed``, ``act_heads``, ``act_mlp``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from jax.sharding import PartitionSpec as P

Rules = tuple[tuple[str, Any], ...]

# FSDP over 'fsdp' (ZeRO-3 style parameter sharding), tensor parallelism over 'tensor', batch over
# ('data', 'fsdp'). Unknown names are replicated.
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("text_embed", None),
    ("cond", None),
    ("vocab", None),
    ("layers", None),
    ("norm", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

_RULES: contextvars.ContextVar[Rules | None] = contextvars.ContextVar("stiv_rules", default=None)


@contextlib.contextmanager
def axis_rules(rules: Sequence[Sequence[Any]] | None) -> Iterator[None]:
    """Makes ``rules`` the active logical→mesh mapping inside the block."""
    token = _RULES.set(None if rules is None else tuple((str(k), _axis(v)) for k, v in rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def _axis(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    return v


def active_rules() -> Rules:
    rules = _RULES.get()
    return DEFAULT_RULES if rules is None else rules


def logical_to_spec(names: Sequence[str | None] | None, rules: Rules | None = None) -> P:
    """Maps logical axis names to a mesh ``PartitionSpec``; a mesh axis is used at most once."""
    if names is None:
        return P()
    table = dict(active_rules() if rules is None else rules)
    used: set[str] = set()
    out = []
    for name in names:
        axis = table.get(name) if name is not None else None
        axes = axis if isinstance(axis, tuple) else ((axis,) if axis else ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
    return P(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; a no-op when no mesh is active.

    Mesh axes of size 1 or not present in the current mesh are dropped, so the same model code
    runs unsharded on one CPU and sharded on a pod.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(names)
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))

    def keep(entry):
        if entry is None:
            return None
        axes = entry if isinstance(entry, tuple) else (entry,)
        axes = tuple(a for a in axes if sizes.get(a, 1) > 1)
        return None if not axes else (axes[0] if len(axes) == 1 else axes)

    spec = P(*(keep(e) for e in spec))
    return jax.lax.with_sharding_constraint(x, spec)
