"""Progressive initialisation (§2.4, Fig. 4): T2I → T2V → STIV, low → high resolution.

``config.init_from.spatial = WORKDIR`` copies every parameter except temporal attention from that
run; ``config.init_from.temporal = WORKDIR`` copies the temporal-attention parameters from another
(e.g. high-res T2V = high-res T2I spatial + low-res T2V temporal). EMA weights are used by
default (App. B). Shapes must match exactly. Positions need no weights: a larger token grid is
handled by RoPE interpolation against ``model.rope_ref_grid`` (the grid the source was trained on).
"""

from __future__ import annotations

import jax
import ml_collections

from stiv_jax.model.surgery import is_temporal
from stiv_jax.parallel.distributed import log
from stiv_jax.storage.checkpoints import restore_params
from stiv_jax.storage.workdir import Workdir


def _flatten(tree: dict, prefix: tuple = ()) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def merge_params(target: dict, source: dict, select) -> tuple[dict, list[tuple[str, ...]]]:
    """Copies ``source`` leaves chosen by ``select(path)`` into a copy of ``target``."""
    src = _flatten(source)
    copied = []

    def visit(node: dict, prefix: tuple) -> dict:
        out = {}
        for k, v in node.items():
            path = prefix + (str(k),)
            if isinstance(v, dict):
                out[k] = visit(v, path)
            elif path in src and select(path):
                if tuple(src[path].shape) != tuple(v.shape):
                    raise ValueError(
                        f"init_from: shape mismatch at {'.'.join(path)}: run has {tuple(v.shape)}, checkpoint has {tuple(src[path].shape)}"
                    )
                out[k] = jax.device_put(src[path].astype(v.dtype), v.sharding)
                copied.append(path)
            else:
                out[k] = v
        return out

    return visit(target, ()), copied


def apply_init_from(config: ml_collections.ConfigDict, state: dict, shardings: dict) -> dict:
    spec = config.init_from
    sources = [(spec.spatial, lambda p: not is_temporal(p), "spatial"), (spec.temporal, is_temporal, "temporal")]
    params = state["params"]
    for workdir, select, what in sources:
        if not workdir:
            continue
        src_cfg = Workdir(workdir).load_config()
        src_params, step = restore_params(workdir, ema=spec.use_ema)
        params, copied = merge_params(params, src_params, select)
        log(
            f"init_from: {len(copied)} {what} parameter arrays from {workdir} (step {step}, {'EMA' if spec.use_ema else 'raw'}); RoPE reference grid {tuple(config.model.rope_ref_grid)} (source {tuple(src_cfg.model.rope_ref_grid)})"
        )
    if params is state["params"]:
        return state
    params = jax.device_put(params, shardings["params"])
    return {**state, "params": params, "ema_params": jax.tree.map(lambda a: a.copy(), params)}
