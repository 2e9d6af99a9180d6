"""Everything a run needs before its first step, shared by the trainer and ``stiv-aot``:
optimizer, frozen encoders, abstract state and its shardings, the jitted init and train step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from stiv_jax.encoders.conditioner import Conditioner, check_consistency
from stiv_jax.errors import ConfigError
from stiv_jax.model.config import resolve
from stiv_jax.model.micro import MICRO_FIELDS
from stiv_jax.parallel.mesh import batch_sharding, replicated
from stiv_jax.parallel.rules import DEFAULT_RULES, Rules
from stiv_jax.storage import checkpoints
from stiv_jax.storage.workdir import Workdir, as_workdir
from stiv_jax.train.optimizer import make_optimizer
from stiv_jax.train.sharding import param_shardings, state_shardings, with_shardings
from stiv_jax.train.step import init_state, make_train_step


@dataclasses.dataclass
class Training:
    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: Rules
    tx: optax.GradientTransformation
    conditioner: Conditioner
    graphdef: nnx.GraphDef
    abstract_state: dict  # ShapeDtypeStructs with target shardings
    state_shardings: dict
    init: Callable[[], dict]
    step: Callable  # jitted train_step(state, batch, frozen) -> (state, metrics), state donated

    def frozen(self, null_text: dict | None = None) -> dict:
        return jax.device_put(self.conditioner.frozen_params(null_text), replicated(self.mesh))

    def abstract_batch(self, per_device_batch: int | None = None) -> dict:
        """ShapeDtypeStructs of one global batch (for AOT lowering)."""
        c = self.config
        m = resolve(c.model)
        b = c.batch_size if per_device_batch is None else per_device_batch * self.mesh.size
        t, r, L = c.data.num_frames, c.data.resolution, c.data.max_text_length
        spec = dict(text_mask=((b, L), bool), micro=((b, len(MICRO_FIELDS)), np.float32))
        if c.data.mode == "latents":
            f = c.autoencoder.downsample
            spec["latents"] = ((b, t, r // f, r // f, m.in_channels), np.float32)
        else:
            spec["video"] = ((b, t, r, r, 3), np.float32)
        if c.text.kind == "cached":
            spec.update(text_emb=((b, L, m.text_dim), np.float32), pooled_text=((b, m.text_dim), np.float32))
        else:
            spec["text_ids"] = ((b, L), np.int32)
        return {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding(self.mesh, len(s))) for k, (s, d) in spec.items()}

    def abstract_null_text(self) -> dict | None:
        """Shapes of the cached empty-prompt encoding (latent-cache runs)."""
        if self.config.text.kind != "cached":
            return None
        m, L = resolve(self.config.model), self.config.data.max_text_length
        return dict(
            text=jax.ShapeDtypeStruct((1, L, m.text_dim), np.float32),
            text_mask=jax.ShapeDtypeStruct((1, L), bool),
            pooled_text=jax.ShapeDtypeStruct((1, m.text_dim), np.float32),
        )


def check_batch_divides(config: ml_collections.ConfigDict) -> None:
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by config.grad_accum_steps={config.grad_accum_steps}"
        )


def check_batch_fits_mesh(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """Every (micro-)batch must split evenly over the batch axes ``('data', 'fsdp')``."""
    per_step = config.batch_size // config.grad_accum_steps
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if per_step % ways:
        raise ValueError(
            f"config.batch_size={config.batch_size} / grad_accum_steps={config.grad_accum_steps} "
            f"= {per_step} clips per step do not split over the batch axes: mesh data={mesh.shape['data']} "
            f"× fsdp={mesh.shape['fsdp']} = {ways} (tensor={mesh.shape['tensor']})"
        )


def build(config: ml_collections.ConfigDict, mesh: Mesh, *, abstract: bool = False) -> Training:
    """``abstract``: frozen encoders as shapes only (for AOT compilation; ``init`` unusable)."""
    rules = tuple(config.sharding_rules) if config.sharding_rules else DEFAULT_RULES
    tx = make_optimizer(config)
    conditioner = Conditioner(config, abstract=abstract)
    check_consistency(config, conditioner)
    check_batch_divides(config)
    check_batch_fits_mesh(config, mesh)
    graphdef, abstract_params, p_sh = param_shardings(config.model, mesh, rules)
    init_fn = functools.partial(init_state, config, tx)
    abstract = jax.eval_shape(init_fn)
    s_sh = state_shardings(abstract, abstract_params, p_sh, tx, mesh)
    step = jax.jit(
        make_train_step(config, graphdef, conditioner, tx),
        in_shardings=(s_sh, None, None),
        out_shardings=(s_sh, replicated(mesh)),
        donate_argnums=(0,),
    )
    return Training(
        config,
        mesh,
        rules,
        tx,
        conditioner,
        graphdef,
        with_shardings(abstract, s_sh),
        s_sh,
        jax.jit(init_fn, out_shardings=s_sh),
        step,
    )


def load_train_state(workdir: str | Workdir, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """``(config, state, step)`` of a workdir's latest (or given) checkpoint, on one device; the
    state's structure is rebuilt from ``WORKDIR/config.json`` (no mesh or data pipeline needed)."""
    config = as_workdir(workdir).load_config()
    abstract = jax.eval_shape(functools.partial(init_state, config, make_optimizer(config)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    state, step = checkpoints.restore_state(workdir, target, step)
    return config, state, step
