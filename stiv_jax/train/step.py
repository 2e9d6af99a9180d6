"""Train state and the jitted flow-matching train step (§2.1–2.3, §3.1).

The state is a plain dict (orbax-friendly, exportable): ``step``, ``params`` and ``ema_params``
(pure dicts as ``nnx.to_pure_dict`` gives), ``opt_state``, ``rng`` (raw key data) and
``first_bad_step`` (−1 while every loss so far was finite; the host stops training when it is set).

One step: encode the batch (frozen encoders) → drop text (p_txt) → draw a frame-replacement task
per sample and drop the image condition (p_img) → draw t and ε → ``x_t`` with clean replaced frames
→ MaskDiT keep-mask → velocity loss on denoised frames × visible tokens (+ MAE term) → AdaFactor
update → EMA of the parameters, all inside one ``jax.jit`` that donates the old state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from stiv_jax.encoders.conditioner import Conditioner
from stiv_jax.flow import loss as flow_loss
from stiv_jax.flow.interpolant import interpolate, velocity_target
from stiv_jax.flow.tasks import drop_image, drop_text, replace_frames, sample_frame_conditions
from stiv_jax.flow.timesteps import sample_time
from stiv_jax.model import maskdit
from stiv_jax.model.dit import STIV
from stiv_jax.parallel.rules import constrain
from stiv_jax.train.optimizer import learning_rate_schedule

State = dict[str, Any]


def init_state(config: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> State:
    """Fresh state (call under ``jax.jit(..., out_shardings=...)`` to create it sharded)."""
    model = STIV(config.model, rngs=nnx.Rngs(params=config.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(config.seed + 1)),
        first_bad_step=jnp.full((), -1, jnp.int32),
    )


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """``ema ← decay·ema + (1 − decay)·params`` (EMA 0.9999, §3.1)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def make_loss_fn(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, conditioner: Conditioner) -> Callable:
    cfg = config.model
    patch = cfg.patch_size

    def loss_fn(params: Any, batch: dict, frozen: dict, key: jax.Array):
        inp = conditioner(frozen, batch)
        x1 = inp["latents"]
        b, t_frames, h, w, _ = x1.shape
        k_txt, k_task, k_t, k_eps, k_mask = jax.random.split(key, 5)

        null = conditioner.null_text(frozen, inp["text"].shape[1])
        text, text_mask, pooled, _ = drop_text(
            k_txt, config.text_dropout, inp["text"], inp["text_mask"], inp["pooled_text"], *null
        )
        given, keep = sample_frame_conditions(
            k_task,
            b,
            t_frames,
            dict(config.tasks),
            predict_frames=config.predict_frames,
            image_dropout=config.image_dropout,
        )
        cond_mask, given_latents = drop_image(given, keep, x1, config.get("null_image", "noise"))

        f = config.flow
        t = sample_time(k_t, b, f.time_dist, f.time_mean, f.time_std, f.time_shift)
        # Drawn flat: rank-5 jax.random.normal compiles ~10x slower on CPU (jax 0.10).
        noise = jax.random.normal(k_eps, (x1.size,), x1.dtype).reshape(x1.shape)
        x_t = replace_frames(interpolate(x1, noise, t), given_latents, cond_mask)
        target = velocity_target(x1, noise)

        grid = (h // patch, w // patch)
        keep_idx = visible = None
        if maskdit.is_masked(config.mask_ratio, cfg.num_decoder_blocks):
            keep_idx = maskdit.sample_keep_indices(k_mask, b, grid[0] * grid[1], config.mask_ratio)
            visible = flow_loss.pixel_keep_mask(maskdit.token_keep_mask(keep_idx, grid[0] * grid[1]), grid, patch)

        model = nnx.merge(graphdef, params)
        pred = model(
            x_t,
            t,
            text=text,
            text_mask=text_mask,
            pooled_text=pooled,
            micro=inp["micro"],
            cond_mask=cond_mask,
            keep_idx=keep_idx,
        )
        loss, parts = flow_loss.flow_matching_loss(
            pred, target, ~cond_mask, visible, x_t=x_t, mae_weight=config.mae_loss_weight
        )
        return loss, parts

    return loss_fn


def split_microbatches(batch: dict, accum: int) -> dict:
    """``[B, ...]`` leaves → ``[accum, B/accum, ...]``; micro-batch j takes rows j, j+accum, …, so
    every device keeps its own rows (no resharding of the batch axis)."""

    def split(x):
        if x.shape[0] % accum:
            raise ValueError(f"batch of {x.shape[0]} is not divisible by grad_accum_steps={accum}")
        return constrain(jnp.moveaxis(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 1, 0), (None, "batch"))

    return jax.tree.map(split, batch)


def accumulate_gradients(grad_fn: Callable, params: Any, batch: dict, frozen: dict, key: jax.Array, accum: int):
    """Mean of ``grad_fn``'s ``((loss, aux), grads)`` over ``accum`` micro-batches, run one at a
    time in a ``lax.scan`` (micro-batch j uses ``jax.random.split(key, accum)[j]``)."""
    micro = split_microbatches(batch, accum)

    def body(carry, inputs):
        mb, k = inputs
        return jax.tree.map(jnp.add, carry, grad_fn(params, mb, frozen, k)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(grad_fn, params, first, frozen, key))
    total, _ = jax.lax.scan(body, zeros, (micro, jax.random.split(key, accum)))
    return jax.tree.map(lambda x: x / accum, total)


def make_train_step(
    config: ml_collections.ConfigDict,
    graphdef: nnx.GraphDef,
    conditioner: Conditioner,
    tx: optax.GradientTransformation,
) -> Callable:
    """``train_step(state, batch, frozen) -> (state, metrics)``; jit it with shardings + donation."""
    loss_fn = make_loss_fn(config, graphdef, conditioner)
    schedule = learning_rate_schedule(config)
    decay = config.optimizer.ema_decay

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    accum = int(config.grad_accum_steps)

    def train_step(state: State, batch: dict, frozen: dict):
        rng, key = jax.random.split(jax.random.wrap_key_data(state["rng"]))
        if accum > 1:
            (loss, parts), grads = accumulate_gradients(grad_fn, state["params"], batch, frozen, key, accum)
        else:
            (loss, parts), grads = grad_fn(state["params"], batch, frozen, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        bad = jnp.where((state["first_bad_step"] < 0) & ~finite, state["step"], state["first_bad_step"])
        new_state = dict(
            step=state["step"] + 1,
            params=params,
            ema_params=ema_update(state["ema_params"], params, decay),
            opt_state=opt_state,
            rng=jax.random.key_data(rng),
            first_bad_step=bad,
        )
        metrics = dict(
            loss=loss,
            grad_norm=grad_norm,
            learning_rate=schedule(state["step"]),
            **{f"loss_{k}": v for k, v in parts.items()},
        )
        if "skipped" in batch:  # records the input pipeline could not read (stiv_jax/data/pipeline.py)
            metrics["skipped_records"] = jnp.sum(batch["skipped"])
        return new_state, metrics

    return train_step
