"""Defaults shared by every training config (experiments/*.py extend these).

Every training config has the keys ``seed``, ``num_train_steps``, ``batch_size``
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
    c.lr_decay = (
        "constant"  # after warmup: 'constant' (the paper) | 'cosine' (to lr_final_fraction·lr at the last step)
    )
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
    c.tasks = ml_collections.ConfigDict(
        dict(t2i=0.0, t2v=1.0, ti2v=0.0, predict=0.0, interpolate=0.0, upsample=0.0, multiview=0.0)
    )
    c.predict_frames = 4
    c.image_dropout = 0.08
    c.null_image = "noise"  # what image dropout gives (flow/tasks.py): no replacement | zero latents
    c.text_dropout = 0.10

    # Frozen encoders. text.kind: 'embedding' (frozen random table, toy runs) | 'clip' | 't5' |
    # 'cached' (latent-cache batches carry text_emb/pooled_text); autoencoder.kind: 'pixel' | 'kl'.
    # text.model: a preset/JSON to randomly initialise a CLIP/T5 encoder when there is no checkpoint
    # (toy runs only).
    c.text = ml_collections.ConfigDict(
        dict(kind="clip", checkpoint="", model="", use_projection=False, vocab_size=32128, seed=0)
    )
    # scaling_factor / shift_factor: the pixel autoencoder's standardisation (vae/pixel.py); a KL
    # VAE carries its own in its config.
    c.autoencoder = ml_collections.ConfigDict(
        dict(kind="kl", checkpoint="", model="", downsample=8, chunk_size=16, scaling_factor=1.0, shift_factor=0.0)
    )

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

    # Evaluation during training (stiv_jax/train/evaluation.py): every eval_every_steps (0: off),
    # FVD of num_samples EMA samples of `prompts` (default: the real clips' captions) against
    # num_real clips of real_path (a shard or video folder), and the samples in TensorBoard.
    c.eval_every_steps = 0
    c.eval = ml_collections.ConfigDict(
        dict(real_path="", prompts=(), num_samples=16, num_real=64, batch_size=8, seed=0, i3d_weights="")
    )

    # stiv-sample's defaults for this run (fields of stiv_jax.sampling.options.SampleOptions); a
    # flag overrides them. Unset: the sampler's own defaults (SampleOptions, guidance.Guidance).
    c.sampling = ml_collections.ConfigDict()
    for key, kind in (
        ("steps", int),
        ("schedule", str),
        ("emulated_steps", int),
        ("solver", str),
        ("guidance", str),
        ("scale", float),
        ("image_scale", float),
        ("renorm", str),
        ("high_scale", float),
        ("split_sigma", float),
    ):
        c.sampling[key] = config_dict.placeholder(kind)
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails before anything is written or compiled, naming the key, on values that cannot work."""
    positive = (
        "num_train_steps",
        "batch_size",
        "grad_accum_steps",
        "checkpoint_every_steps",
        "log_every_steps",
        "max_checkpoints_to_keep",
        "stop_check_every_steps",
    )
    for key in positive:
        if not int(c[key]) >= 1:
            raise ConfigError(f"config.{key}={c[key]} must be >= 1")
    if not 0.0 <= float(c.data.get("max_skipped_fraction", 0.0)) <= 1.0:
        raise ConfigError(f"config.data.max_skipped_fraction={c.data.max_skipped_fraction} must be in [0, 1]")
    if not float(c.learning_rate) >= 0.0:  # also rejects NaN
        raise ConfigError(f"config.learning_rate={c.learning_rate} must be a number >= 0")
    if not 0.0 <= float(c.mask_ratio) < 1.0:
        raise ConfigError(f"config.mask_ratio={c.mask_ratio} must be in [0, 1)")
    from stiv_jax.flow.task_table import NULL_IMAGES

    if c.get("null_image", "noise") not in NULL_IMAGES:
        raise ConfigError(f"config.null_image={c.null_image!r} must be one of {NULL_IMAGES}")
    if c.mask_ratio > 0 and not c.model.num_decoder_blocks:  # it would silently train unmasked
        raise ConfigError(
            f"config.mask_ratio={c.mask_ratio} masks tokens, but config.model.num_decoder_blocks=0 "
            "leaves no MaskDiT decoder to unmask them (§2.2): set config.mask_ratio=0 or "
            "config.model.num_decoder_blocks >= 1"
        )
    # The tokenizer must give ids the text encoder reads (CLIP BPE for public CLIP weights).
    import json

    from stiv_jax.storage import paths
    from stiv_jax.text.tokenizer import check_pairing

    text, vocab = c.text, None
    if text.kind == "embedding":
        vocab = int(text.vocab_size)
    elif text.kind in ("clip", "t5") and (text.checkpoint or text.model):
        try:  # the encoder's vocabulary from its stiv-import config.json or preset; unreadable: unknown
            if text.checkpoint:
                meta = json.loads(paths.read_text(paths.join(text.checkpoint, "config.json")))
                vocab = int(meta["config"]["vocab_size"])
            else:
                from stiv_jax.text.clip import CLIPTextConfig
                from stiv_jax.text.t5 import T5EncoderConfig

                vocab = (CLIPTextConfig if text.kind == "clip" else T5EncoderConfig).resolve(text.model).vocab_size
        except (OSError, ValueError, KeyError, TypeError):
            vocab = None
    check_pairing(c.data.get("tokenizer", "t5"), int(c.data.max_text_length), text.kind, vocab)


# What a resumed run may not change: the train state's structure and what the model was fed.
FIXED_ON_RESUME = (
    "model.",
    "optimizer.",
    "text.kind",
    "data.tokenizer",
    "text.model",
    "text.vocab_size",
    "text.use_projection",
    "autoencoder.kind",
    "autoencoder.model",
    "autoencoder.downsample",
    "data.mode",
    "data.max_text_length",
)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(
    saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict, where: str = "the workdir"
) -> list[str]:
    """``key: old → new`` for every setting that differs from the workdir's ``config.json``;
    raises :class:`ConfigError` listing them when one of ``FIXED_ON_RESUME`` changed."""
    a, b = _flat(saved.to_dict()), _flat(new.to_dict())
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    # Keys the saved config lacks are settings added since it was written: not a change.
    changed = sorted(k for k in a if norm(a[k]) != norm(b.get(k)))
    lines = [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in changed]
    fixed = [line for k, line in zip(changed, lines) if k.startswith(FIXED_ON_RESUME)]
    if fixed:
        raise ConfigError(
            f"{where} holds a run with another model or encoders, so it cannot resume "
            f"with this config ({'; '.join(fixed)}); use a new --workdir, or the run's own settings "
            "(its config.json is unchanged)"
        )
    return lines
