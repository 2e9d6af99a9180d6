"""The paper's optimizer (§3.1, App. B–D): AdaFactor, β1 = 0.9, constant β2 = 0.999, no weight
decay, no parameter scaling, global-norm gradient clipping 1.0, linear warmup (1k steps) to a
constant 2e-4.

optax's ``adafactor(decay_rate=0.8)`` treats the decay as an *exponent* (β2_t = 1 − (t+1)^−0.8);
we build the chain from parts with a constant ``decay_rate_fn`` instead. Order (as optax's
adafactor): global-norm clip → factored second-moment scaling → per-block update-RMS clip
(Adafactor's d = 1.0; ``None`` disables) → ×(−lr) → momentum (EMA of updates, no debiasing).
"""

from __future__ import annotations

import ml_collections
import optax

LR_DECAYS = ("constant", "cosine")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then constant (the paper),
    or with ``lr_decay='cosine'`` a half cosine down to ``lr_final_fraction · learning_rate`` at
    ``num_train_steps`` (short runs end at a lower loss: the CPU demo 0.055 instead of 0.061)."""
    warmup, lr = max(int(config.warmup_steps), 1), config.learning_rate
    if config.lr_decay == "constant":
        return optax.warmup_constant_schedule(0.0, lr, warmup)
    if config.lr_decay == "cosine":  # a run no longer than its warmup only warms up
        total = max(int(config.num_train_steps), warmup + 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=config.lr_final_fraction * lr)
    raise ValueError(f"config.lr_decay={config.lr_decay!r}; choose one of {LR_DECAYS}")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    o = config.optimizer
    parts = []
    if o.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    parts.append(
        optax.scale_by_factored_rms(
            factored=True,
            decay_rate=o.b2,
            decay_rate_fn=lambda step, rate: rate,  # constant β2, not optax's step**-0.8
            min_dim_size_to_factor=o.min_dim_size_to_factor,
            epsilon=o.eps,
        )
    )
    if o.update_clip:
        parts.append(optax.clip_by_block_rms(o.update_clip))
    parts.append(optax.scale_by_learning_rate(learning_rate_schedule(config)))
    if o.b1:
        parts.append(optax.ema(o.b1, debias=False))
    if o.weight_decay:
        raise ValueError("config.optimizer.weight_decay: the paper uses none; not supported")
    return optax.chain(*parts)


def optimizer_config() -> ml_collections.ConfigDict:
    """Defaults for ``config.optimizer`` (paper values)."""
    o = ml_collections.ConfigDict()
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-30
    o.grad_clip_norm = 1.0
    o.update_clip = 1.0
    o.min_dim_size_to_factor = 128
    o.weight_decay = 0.0
    o.ema_decay = 0.9999
    return o
