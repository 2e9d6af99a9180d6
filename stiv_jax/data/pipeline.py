"""Grain input pipeline over clip shards (pixels) or latent-cache shards (latents).

Per bucket ``b`` (one batch shape), with the record indices that ``index.npy`` assigns to it::

    MapDataset.source(records of b)[process_index::process_count]   # per-process shard
      .seed(seed_b).shuffle().repeat()                               # reshuffled every epoch
      .random_map(SampleClip(...))                                   # decode/sample/crop/tokenize
      .batch(per_process_batch_size, drop_remainder=True)

and the buckets are interleaved by ``MapDataset.mix`` in proportion to their global sizes, so every
process draws the same bucket at the same step (multi-host batches need one shape). All of this is
index-based, hence deterministic and cheap to checkpoint; ``to_iter_dataset`` adds read-ahead
threads and ``mp_prefetch`` moves the decoding into ``num_workers`` processes. The iterator's
``get_state``/``set_state`` (or ``grain.checkpoint.CheckpointSave/Restore`` inside orbax) resume
the exact stream; restoring needs the same process count and ``num_workers``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import grain
import ml_collections
import numpy as np

from stiv_jax.data import config as data_config
from stiv_jax.data import shards, transforms

LATENT_FORMAT = "stiv_jax.latents.v1"
CLIP_FORMAT = "stiv_jax.clips.v1"


class SubsetSource:
    """Random-access view of ``source`` restricted to ``indices`` (picklable for workers)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> bytes:
        return self.source[int(self.indices[i])]

    def __repr__(self) -> str:  # grain logs this; keep it short and stable
        return f"SubsetSource({len(self.indices)} of {len(self.source)} records)"


def assign_pixel_buckets(
    index: np.ndarray, buckets: Sequence[tuple[int, int, int]], strides: Sequence[int]
) -> np.ndarray:
    """Bucket id per record (-1: fits none). Images -> T=1 buckets; videos -> the longest bucket
    they have frames for at the smallest stride; ties -> closest aspect ratio, then list order."""
    t = np.array([b[0] for b in buckets])
    aspect = np.log(np.array([b[1] / b[2] for b in buckets]))
    is_image = (index["kind"] == shards.KINDS.index("image"))[:, None]
    long_enough = (t[None] - 1) * min(strides) + 1 <= index["num_frames"][:, None]
    fits = (t[None] == 1) | (~is_image & long_enough)  # [N, B]
    longest = np.where(fits, t[None], 0).max(axis=1, keepdims=True)
    candidates = fits & (t[None] == longest)
    distance = np.abs(aspect[None] - np.log(index["height"] / index["width"])[:, None])
    best = np.argmin(np.where(candidates, distance, np.inf), axis=1)  # first on ties
    return np.where(fits.any(axis=1), best, -1)


def latent_buckets(index: np.ndarray) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Distinct latent shapes ``(T, h, w, C)`` (sorted) and each record's position among them."""
    shapes = np.stack([index["num_frames"], index["height"], index["width"], index["channels"]], axis=1)
    unique, assignment = np.unique(shapes, axis=0, return_inverse=True)
    return [tuple(int(v) for v in s) for s in unique], assignment.reshape(-1)


def resolve_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Accepts the full experiment config (uses ``config.data``) or the data config itself."""
    return config.data if "data" in config else config


def _tokenizer(cfg: ml_collections.ConfigDict):
    from stiv_jax.text.tokenizer import T5Tokenizer

    if not cfg.tokenizer_path:
        raise ValueError("data.tokenizer_path is empty: set it to a SentencePiece model (e.g. DEMO/spm.model)")
    return T5Tokenizer(cfg.tokenizer_path, cfg.max_text_length)


def _element_fns(cfg: ml_collections.ConfigDict, shard_dir: str, index: np.ndarray):
    """``(shapes, assignment, [per-bucket transform], random)`` for the shard folder's format."""
    fmt = shards.load_manifest(shard_dir).get("format")
    if cfg.mode == "latents":
        if fmt != LATENT_FORMAT:
            raise ValueError(f"data.mode='latents' but {shard_dir} holds {fmt!r} (run stiv-encode-shards)")
        shapes, assignment = latent_buckets(index)
        return shapes, assignment, [transforms.read_latent_record] * len(shapes), False
    if fmt != CLIP_FORMAT:
        raise ValueError(f"data.mode='pixels' but {shard_dir} holds {fmt!r} (expected stiv-make-shards output)")
    shapes = data_config.buckets(cfg)
    strides = tuple(int(s) for s in cfg.frame_strides)
    assignment = assign_pixel_buckets(index, shapes, strides)
    tokenizer = _tokenizer(cfg)
    fns = [transforms.SampleClip(t, h, w, strides, bool(cfg.random_crop), tokenizer) for t, h, w in shapes]
    return shapes, assignment, fns, bool(cfg.random_crop)


def bucket_datasets(
    config: ml_collections.ConfigDict,
    process_index: int = 0,
    process_count: int = 1,
    training: bool = True,
) -> list[tuple[tuple[int, ...], int, grain.MapDataset]]:
    """``[(shape, global_count, element MapDataset)]`` per non-empty bucket, unbatched.

    ``training`` shuffles and repeats (``num_epochs``); otherwise one pass in key order.
    """
    cfg = resolve_data_config(config)
    data_config.validate(cfg)
    index = shards.load_index(cfg.path)
    source = grain.sources.ArrayRecordDataSource(shards.shard_paths(cfg.path))
    if len(source) != len(index):
        raise ValueError(f"{cfg.path}: index.npy has {len(index)} rows but the shards hold {len(source)} records")
    shapes, assignment, fns, random = _element_fns(cfg, cfg.path, index)
    unused = int(np.sum(assignment < 0))
    if unused:
        logging.warning("%s: %d of %d records fit no bucket in %s; not used", cfg.path, unused, len(index), shapes)
    out = []
    for b, (shape, fn) in enumerate(zip(shapes, fns)):
        members = np.flatnonzero(assignment == b)
        if len(members) < process_count:
            if len(members):
                logging.warning("bucket %s has %d records < %d processes; dropped", shape, len(members), process_count)
            continue
        ds = grain.MapDataset.source(SubsetSource(source, members[process_index::process_count]))
        if training:
            seed = np.random.SeedSequence([int(cfg.seed), b, process_index]).generate_state(1)[0]
            ds = ds.seed(int(seed)).shuffle().repeat(cfg.num_epochs or None)
            ds = ds.random_map(fn) if random else ds.map(fn)
        else:
            ds = ds.map(fn)
        out.append((shape, len(members), ds))
    if not out:
        raise ValueError(f"{cfg.path}: no records fit the configured buckets {shapes}")
    return out


def ensure_absl_flags_parsed() -> None:
    """Grain 0.2.18 workers read absl flags; outside ``absl.app.run`` mark them parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(
    config: ml_collections.ConfigDict,
    process_index: int = 0,
    process_count: int = 1,
    per_process_batch_size: int = 1,
) -> grain.IterDataset:
    """The training ``IterDataset`` of batches (numpy dicts) for one process (see module doc)."""
    cfg = resolve_data_config(config)
    parts = bucket_datasets(cfg, process_index, process_count, training=True)
    batched = [ds.batch(per_process_batch_size, drop_remainder=True) for _, _, ds in parts]
    ds = batched[0] if len(batched) == 1 else grain.MapDataset.mix(batched, [n for _, n, _ in parts])
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, cfg.read_threads), prefetch_buffer_size=cfg.prefetch))
    if cfg.num_workers > 0:
        ensure_absl_flags_parsed()
        options = grain.MultiprocessingOptions(num_workers=cfg.num_workers, per_worker_buffer_size=max(1, cfg.prefetch))
        ds = ds.mp_prefetch(options)
    return ds


def make_iterator(
    config: ml_collections.ConfigDict,
    process_index: int = 0,
    process_count: int = 1,
    per_process_batch_size: int = 1,
) -> grain.DatasetIterator:
    """``iter(make_dataset(...))``: checkpoint it with ``grain.checkpoint.CheckpointSave``."""
    return iter(make_dataset(config, process_index, process_count, per_process_batch_size))
