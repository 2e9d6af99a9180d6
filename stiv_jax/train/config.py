"""Defaults shared by every training config (experiments/*.py extend these).

Every training config has the SPEC.md keys: ``seed``, ``num_train_steps``, ``batch_size``
(global), ``learning_rate``, ``warmup_steps``, ``checkpoint_every_steps``, ``log_every_steps``,
``mesh.{data,fsdp,tensor}``, ``data.path``, ``data.num_frames``, ``data.resolution``,
``model.size``. The returned config is locked: an unknown ``--config.KEY`` fails at flag parsing,
before anything is compiled.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from stiv_jax.data.config import get_data_config
from stiv_jax.errors import ConfigError
from stiv_jax.model.config import get_model_config
from stiv_jax.train.optimizer import optimizer_config


def base_config(size: str = "XL", **model_overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 400_000
    c.batch_size = 1024  # global
    c.grad_accum_steps = 1  # micro-batches per step (same global batch in less memory)
    c.learning_rate = 2e-4
    c.warmup_steps = 1000
    c.lr_decay = "constant"  # after warmup: 'constant' (the paper) | 'cosine' (to lr_final_fraction·lr at the last step)
    c.lr_final_fraction = 0.0
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 50
    c.max_checkpoints_to_keep = 3
    c.async_checkpointing = True
    c.distributed = False  # call jax.distributed.initialize() (multi-host pods)
    # Where the processes meet; unset: auto-detected (Cloud TPU, Slurm). stiv_jax/parallel/distributed.py
    c.distributed_coordinator = config_dict.placeholder(str)  # "host:port" of process 0
    c.distributed_num_processes = config_dict.placeholder(int)
    c.distributed_process_id = config_dict.placeholder(int)
    c.stop_check_every_steps = 10  # multi-process: how often a SIGINT/SIGTERM flag is agreed (a collective)

    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.sharding_rules = config_dict.placeholder(tuple)  # None → stiv_jax.parallel.rules.DEFAULT_RULES

    c.model = get_model_config(size, **model_overrides)
    c.optimizer = optimizer_config()

    # Flow matching (§2.1) and MaskDiT (§2.2).
    c.flow = ml_collections.ConfigDict(dict(time_dist="logit_normal", time_mean=0.0, time_std=1.0, time_shift=1.0))
    c.mask_ratio = 0.5
    c.mae_loss_weight = 0.1

    # Task mixing through frame replacement and condition dropout (§2.3, App. B).
    c.tasks = ml_collections.ConfigDict(dict(t2i=0.0, t2v=1.0, ti2v=0.0, predict=0.0, interpolate=0.0, upsample=0.0))
    c.predict_frames = 4
    c.image_dropout = 0.08
    c.text_dropout = 0.10

    # Frozen encoders. text.kind: 'embedding' (frozen random table, toy runs) | 'clip' | 't5' |
    # 'cached' (latent-cache batches carry text_emb/pooled_text); autoencoder.kind: 'pixel' | 'kl'.
    # text.model: a preset/JSON to randomly initialise a CLIP/T5 encoder when there is no checkpoint
    # (toy runs only).
    c.text = ml_collections.ConfigDict(dict(kind="clip", checkpoint="", model="", use_projection=False, vocab_size=32128, seed=0))
    c.autoencoder = ml_collections.ConfigDict(dict(kind="kl", checkpoint="", model="", downsample=8, chunk_size=16))

    # Input pipeline: keys documented in stiv_jax/data/config.py, plus the source kind.
    c.data = get_data_config()
    c.data.unlock()
    c.data.kind = "shards"  # 'shards' (Grain over ArrayRecord) | 'synthetic' (in-memory, tests)
    c.data.synthetic_examples = 16  # data.kind='synthetic': size of the fixed pool of clips
    c.data.num_frames = 20  # paper default: 256² × 20 frames, 1 of every 3 source frames (App. B)
    c.data.resolution = 256
    c.data.frame_strides = (3,)
    c.data.num_workers = 8
    c.data.max_text_length = 128

    # Progressive initialisation (§2.4, Fig. 4): spatial weights from one run, temporal from another.
    c.init_from = ml_collections.ConfigDict(dict(spatial="", temporal="", use_ema=True))
    return c


def paper_config(size: str, *, resolution: int, num_frames: int, tasks: dict[str, float], batch_size: int = 1024, **model_overrides) -> ml_collections.ConfigDict:
    """A paper-scale run (§3.1, App. B): 400k steps, AdaFactor at 2e-4 after 1k warmup, EMA 0.9999,
    MaskDiT 50%, 8%/10% image/text dropout, FSDP over every chip, bf16 compute.

    Trains from the latent cache (``stiv-encode-shards`` with the VAE and CLIP-bigG text encoder):
    ``data.mode='latents'``, ``text.kind='cached'``. To encode on the fly instead, set
    ``data.mode=pixels``, ``text.kind=clip``, ``text.checkpoint=...``, ``autoencoder.checkpoint=...``.
    """
    c = base_config(size, temporal_attention=num_frames > 1, **model_overrides)
    c.batch_size = batch_size
    c.data.mode = "latents"
    c.data.num_frames = num_frames
    c.data.resolution = resolution
    c.text.kind = "cached"
    for name in c.tasks:
        c.tasks[name] = 0.0
    c.tasks.update(tasks)
    return c


def fit_16gib_chips(c: ml_collections.ConfigDict, grad_accum_steps: int = 4) -> ml_collections.ConfigDict:
    """Memory settings that fit STIV-M at 512² on 16 GiB v5e chips with the paper's batch.

    ``stiv-aot --config=experiments/t2v_m_512.py --topology=v5e:16x16`` (README, "Memory on TPU"):
    4 clips per chip with XLA attention and the paper's remat policy need 40.55 GiB of temporaries.
    The same 1024-clip step fits in 13.65 GiB per chip with (1) ``grad_accum_steps=4`` micro-batches
    of 1 clip per chip, (2) splash (flash) attention, which never stores the 2 GiB-per-clip spatial
    score matrices of the decoder blocks, and (3) full remat (only each block's input is kept;
    the paper's "self-attention outputs" policy measured 19.07 GiB). On v5p (95 GiB) none is needed.
    """
    c.grad_accum_steps = grad_accum_steps
    c.model.attention_impl = "splash"
    c.model.remat_policy = "full"
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails before anything is written or compiled, naming the key, on values that cannot work."""
    positive = ("num_train_steps", "batch_size", "grad_accum_steps", "checkpoint_every_steps",
                "log_every_steps", "max_checkpoints_to_keep", "stop_check_every_steps")
    for key in positive:
        if not int(c[key]) >= 1:
            raise ConfigError(f"config.{key}={c[key]} must be >= 1")
    if not 0.0 <= float(c.data.get("max_skipped_fraction", 0.0)) <= 1.0:
        raise ConfigError(f"config.data.max_skipped_fraction={c.data.max_skipped_fraction} must be in [0, 1]")
    if not float(c.learning_rate) >= 0.0:  # also rejects NaN
        raise ConfigError(f"config.learning_rate={c.learning_rate} must be a number >= 0")


# What a resumed run may not change: the train state's structure and what the model was fed.
FIXED_ON_RESUME = ("model.", "optimizer.", "text.kind", "text.model", "text.vocab_size", "text.use_projection",
                   "autoencoder.kind", "autoencoder.model", "autoencoder.downsample", "data.mode",
                   "data.max_text_length")


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict, where: str = "the workdir") -> list[str]:
    """``key: old → new`` for every setting that differs from the workdir's ``config.json``;
    raises :class:`ConfigError` listing them when one of ``FIXED_ON_RESUME`` changed."""
    a, b = _flat(saved.to_dict()), _flat(new.to_dict())
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON turns tuples into lists)
    # Keys the saved config lacks are settings added since it was written: not a change.
    changed = sorted(k for k in a if norm(a[k]) != norm(b.get(k)))
    lines = [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in changed]
    fixed = [line for k, line in zip(changed, lines) if k.startswith(FIXED_ON_RESUME)]
    if fixed:
        raise ConfigError(f"{where} holds a run with another model or encoders, so it cannot resume "
                          f"with this config ({'; '.join(fixed)}); use a new --workdir, or the run's own settings "
                          "(its config.json is unchanged)")
    return lines
