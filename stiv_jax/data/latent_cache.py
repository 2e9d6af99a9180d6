"""Latent cache: run the autoencoder and text encoder over clip shards once, store the outputs.

At scale, decoding video and running the VAE/text encoder every step costs more than the DiT; like
MaxDiffusion's ``cache_latents_text_encoder_outputs``, ``encode_shards`` runs the deterministic
pixel pipeline (centred crops, first fitting stride) over every record once and writes latent
shards that ``data.mode='latents'`` reads back. Augmentation is therefore frozen at encode time;
each record keeps the micro-conditions of the crop it was encoded from. With ``every_stride`` a
record is encoded once per stride of ``frame_strides`` that fits it (one latent record each, its
stride in ``micro``): a run then trains on several strides, e.g. long video's keyframe and
interpolation modes (§5).

Record payload (``shards`` schema, ``kind='latent'``): ``latents [T, h, w, C]``, ``micro [6]``,
``text_mask [L]`` and either ``text_emb [L, D]`` + ``pooled_text [D]`` (with a text encoder) or
``text_ids [L]`` (``text_encoder='none'``: the trainer encodes text itself); float arrays are
stored as ``float16`` by default. ``source_key`` points back to the clip record. Records that
cannot be read or decoded are left out, listed in the manifest (``num_skipped``, ``skipped``:
``{"key", "reason"}``) and reported through ``log``.

The encoders are the ones training and sampling use (``stiv_jax.encoders.build``); from Python,
the autoencoder may be any object with ``encode(frames [B,T,H,W,3]) -> latents`` and the text
encoder any ``encode_text(ids [B,L] int32, mask [B,L] bool) -> (tokens [B,L,D], pooled [B,D])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from stiv_jax.data import config as data_config
from stiv_jax.data import pipeline, shards
from stiv_jax.encoders.build import build_autoencoder, build_text_encoder, from_spec
from stiv_jax.errors import UserError
from stiv_jax.text.tokenizer import null_text_ids

TextEncoder = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]


def encoders_from_specs(autoencoder: str, text_encoder: str) -> tuple[Any, TextEncoder | None]:
    """The project's own encoders named by command-line specs (``stiv_jax.encoders.build.from_spec``):
    ``pixel[:F]`` or ``kl:DIR``; ``none``, ``clip:DIR`` or ``t5:DIR``."""
    ae = build_autoencoder(from_spec(autoencoder, what="autoencoder"))
    text = build_text_encoder(from_spec(text_encoder, what="text"))
    return ae, (None if text is None else text.encode)


def _store(x, dtype: np.dtype) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x


def encode_shards(
    config: ml_collections.ConfigDict,
    out_dir: str,
    autoencoder: Any,
    encode_text: TextEncoder | None = None,
    *,
    batch_size: int = 8,
    dtype: str = "float16",
    records_per_shard: int = 1000,
    settings: dict | None = None,
    every_stride: bool = False,
    log=print,
) -> dict:
    """Encodes every record of ``config.path`` (a clip shard folder) into ``out_dir``; returns the
    manifest. ``UserError`` when no record can be encoded (no manifest is written then)."""
    cfg = ml_collections.ConfigDict(pipeline.resolve_data_config(config).to_dict())
    cfg.mode, cfg.random_crop = "pixels", False
    data_config.validate(cfg)
    store_dtype = np.dtype(dtype)
    shards.load_manifest(cfg.path)  # a clear error when --input is not a shard folder
    source_index = shards.load_index(cfg.path)
    encode = jax.jit(autoencoder.encode)
    writer = shards.ShardWriter(out_dir, "latents", records_per_shard)
    shape_counts: dict[str, int] = {}
    skipped: list[dict] = []
    moments = np.zeros(3)  # count, sum, sum of squares of every latent value (float64)

    def write_batch(elements: list[dict]) -> None:
        batch = {k: np.stack([e[k] for e in elements]) for k in elements[0]}
        latents = np.asarray(encode(batch["video"]))
        flat = latents.astype(np.float64).ravel()
        moments[:] += (flat.size, flat.sum(), np.square(flat).sum())
        text = {"text_mask": batch["text_mask"]}
        if encode_text is None:
            text["text_ids"] = batch["text_ids"]
        else:
            tokens, pooled = encode_text(batch["text_ids"], batch["text_mask"])
            text.update(text_emb=np.asarray(tokens), pooled_text=np.asarray(pooled))
        for i, key in enumerate(batch["key"]):
            src = source_index[int(key)]
            record = {
                "kind": "latent",
                "source_key": int(key),
                "latents": _store(latents[i], store_dtype),
                "micro": batch["micro"][i],
            }
            record.update({k: _store(v[i], store_dtype) for k, v in text.items()})
            t, h, w, c = latents[i].shape
            writer.write(
                record,
                dict(
                    kind=src["kind"], num_frames=t, height=h, width=w, channels=c, fps=src["fps"], motion=src["motion"]
                ),
            )
            name = "x".join(map(str, latents[i].shape))
            shape_counts[name] = shape_counts.get(name, 0) + 1

    passes = [cfg]
    if every_stride:
        passes = [ml_collections.ConfigDict({**cfg.to_dict(), "frame_strides": (int(s),)}) for s in cfg.frame_strides]
    datasets = [(p, *bucket) for p in passes for bucket in pipeline.bucket_datasets(p, training=False)]
    for pass_cfg, shape, count, ds in datasets:
        elements = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=max(1, cfg.read_threads), prefetch_buffer_size=cfg.prefetch)
        )
        if cfg.num_workers > 0:
            pipeline.ensure_absl_flags_parsed()
            elements = elements.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
        pending, bad = [], 0
        for element in elements:
            if "error" in element:  # unreadable/undecodable: left out, counted, reported
                bad += 1
                skipped.append({"key": int(element["key"]), "reason": str(element["error"])})
                log(f"skipped {element['error']}")
                continue
            pending.append(element)
            if len(pending) == batch_size:
                write_batch(pending)
                pending = []
        if pending:
            write_batch(pending)
        where = f"bucket {shape}" + (f" stride {pass_cfg.frame_strides[0]}" if every_stride else "")
        log(f"{where}: encoded {count - bad} records" + (f", skipped {bad}" if bad else ""))
    shard_list = writer.close()
    if not sum(shape_counts.values()):
        raise UserError(
            f"nothing encoded: none of the records of {cfg.path} could be read or decoded "
            f"(the first: {skipped[0]['reason'] if skipped else '?'}); {out_dir} has no manifest"
        )
    if encode_text is not None:  # the empty prompt's encoding, for text dropout in training
        null_ids, null_mask = null_text_ids(cfg.max_text_length, cfg.get("tokenizer", "t5"))
        tokens, pooled = encode_text(null_ids, null_mask)
        shards.save_null_text(out_dir, np.asarray(tokens, np.float32), null_mask, np.asarray(pooled, np.float32))
    manifest = {
        "format": pipeline.LATENT_FORMAT,
        "num_records": sum(s["records"] for s in shard_list),
        "latent_shapes": dict(sorted(shape_counts.items())),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "total_bytes": sum(s["bytes"] for s in shard_list),
        "source": cfg.path,
        "shards": shard_list,
        "latent_stats": latent_stats(*moments),
        "settings": {
            "dtype": dtype,
            "num_frames": cfg.num_frames,
            "resolution": cfg.resolution,
            "buckets": [list(b) for b in data_config.buckets(cfg)],
            "frame_strides": list(cfg.frame_strides),
            "every_stride": every_stride,
            "max_text_length": cfg.max_text_length,
            **(settings or {}),
        },
    }
    shards.write_manifest(out_dir, manifest)
    return manifest


def latent_stats(count: float, total: float, squares: float) -> dict[str, float]:
    """Mean and standard deviation of every latent value written: a pixel autoencoder standardised
    with ``shift_factor = mean`` and ``scaling_factor = 1 / std`` (of raw latents) gives unit-scale
    data (vae/pixel.py)."""
    mean = total / count
    return {"mean": float(mean), "std": float(np.sqrt(max(squares / count - mean**2, 0.0)))}


def null_text_for(config: ml_collections.ConfigDict) -> dict | None:
    """Latent-cache runs (``text.kind='cached'``) read the empty-prompt encoding written next to the
    cached shards; other runs encode it themselves (``None``)."""
    if config.text.kind != "cached":
        return None
    return shards.load_null_text(config.data.path)
