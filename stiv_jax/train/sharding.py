"""Shardings of the whole train state: params and EMA by logical axes, AdaFactor state like its
params where shapes match (momentum) and replicated otherwise (factored row/column statistics —
flax's nnx.Optimizer cannot shard those), scalars replicated."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from stiv_jax.model.dit import STIV
from stiv_jax.parallel.mesh import logical_axes, replicated, shardings_for
from stiv_jax.parallel.rules import Rules


def param_shardings(model_cfg, mesh: Mesh, rules: Rules | None = None) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, abstract params, shardings)`` of the model, without allocating it."""
    # jax.eval_shape (not nnx.eval_shape): keeps logical names as metadata even under a mesh.
    abstract = jax.eval_shape(lambda: STIV(model_cfg, rngs=nnx.Rngs(params=0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    axes = logical_axes(params)
    shapes = nnx.to_pure_dict(params)
    return graphdef, shapes, shardings_for(shapes, axes, mesh, rules)


def state_shardings(
    abstract_state: dict, abstract_params: Any, p_shardings: Any, tx: optax.GradientTransformation, mesh: Mesh
) -> dict:
    rep = replicated(mesh)
    params_def = jax.tree.structure(abstract_params)

    def visit(node):
        # A param-shaped subtree (momentum, second moments): shard like the params where the
        # shapes agree; optax.tree_map_params would run ops eagerly, which AOT (no devices) cannot.
        if jax.tree.structure(node) == params_def:
            return jax.tree.map(lambda s, sh, p: sh if s.shape == p.shape else rep, node, p_shardings, abstract_params)
        children, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
        if treedef.num_leaves == 1 and children and children[0] is node:
            return rep
        return jax.tree_util.tree_unflatten(treedef, [visit(c) for c in children])

    opt = visit(abstract_state["opt_state"])
    return dict(
        step=rep,
        params=p_shardings,
        ema_params=p_shardings,
        opt_state=opt,
        rng=rep,
        first_bad_step=rep,
    )


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying target shardings (for orbax restore / AOT lowering)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
