"""Grain input pipeline over clip shards (pixels) or latent-cache shards (latents).

Per bucket ``b`` (one batch shape), with the record indices that ``index.npy`` assigns to it::

    MapDataset.source(records of b)                    # every record: one global stream
      .seed(seed_b).shuffle().repeat()                 # reshuffled every epoch
      .random_map(SampleClip(...))                     # decode/sample/crop/tokenize (lazily)
    batch_rows(.., batch_size, rows)                   # this process's rows of each global batch

and the buckets are interleaved by ``MapDataset.mix`` in proportion to their sizes, so every
process draws the same bucket at the same step (multi-host batches need one shape). Global batch
``k`` holds the same examples, with the same random crops, whether one process reads all of its
rows or several processes read a share each (``rows``: the rows of the global batch that this
process's devices hold, ``stiv_jax.train.data.process_rows``). All of this is index-based, so the
stream is a pure function of the config and ``make_dataset(..., start=k)`` begins at global batch
``k``: the trainer resumes the data from the restored step, on any process count or
``num_workers``. ``to_iter_dataset`` adds read-ahead threads and ``mp_prefetch`` moves the
decoding into ``num_workers`` processes.
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


class _ProcessRows(grain.MapDataset):
    """Element ``j`` is element ``(j // b)·B + rows[j % b]`` of ``parent`` (``b = len(rows)``)."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, rows: Sequence[int]):
        super().__init__(parent)
        self.global_batch, self.rows = int(global_batch), np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return (len(self._parent) // self.global_batch) * len(self.rows)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        k, i = divmod(int(j), len(self.rows))
        return self._parent[k * self.global_batch + int(self.rows[i])]

    def __str__(self) -> str:
        return f"ProcessRows(global_batch={self.global_batch}, rows={len(self.rows)})"


def batch_rows(ds: grain.MapDataset, batch_size: int, rows: Sequence[int] | None = None) -> grain.MapDataset:
    """Global batches of ``batch_size`` consecutive elements of ``ds``, each cut to ``rows``
    (default: all rows): only those elements are ever read, so a process decodes its share."""
    rows = range(batch_size) if rows is None else rows
    if not len(rows) or min(rows) < 0 or max(rows) >= batch_size:
        raise ValueError(f"rows {list(rows)[:8]} do not fit a global batch of {batch_size}")
    return _ProcessRows(ds, batch_size, rows).batch(len(rows), drop_remainder=True)


def bucket_datasets(
    config: ml_collections.ConfigDict,
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
        if not len(members):
            continue
        ds = grain.MapDataset.source(SubsetSource(source, members))
        if training:
            # The trailing 0 (once the process index) keeps the stream of earlier runs.
            seed = np.random.SeedSequence([int(cfg.seed), b, 0]).generate_state(1)[0]
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
    batch_size: int = 1,
    rows: Sequence[int] | None = None,
    start: int = 0,
) -> grain.IterDataset:
    """The training ``IterDataset`` of this process's ``rows`` of each global batch of
    ``batch_size`` (numpy dicts), from global batch ``start`` on (see module doc)."""
    cfg = resolve_data_config(config)
    parts = bucket_datasets(cfg, training=True)
    batched = [batch_rows(ds, batch_size, rows) for _, _, ds in parts]
    ds = batched[0] if len(batched) == 1 else grain.MapDataset.mix(batched, [n for _, n, _ in parts])
    ds = ds[start:] if start else ds
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, cfg.read_threads), prefetch_buffer_size=cfg.prefetch))
    if cfg.num_workers > 0:
        ensure_absl_flags_parsed()
        options = grain.MultiprocessingOptions(num_workers=cfg.num_workers, per_worker_buffer_size=max(1, cfg.prefetch))
        ds = ds.mp_prefetch(options)
    return ds


def make_iterator(
    config: ml_collections.ConfigDict,
    batch_size: int = 1,
    rows: Sequence[int] | None = None,
    start: int = 0,
) -> grain.DatasetIterator:
    """``iter(make_dataset(...))`` (a Grain iterator: ``grain.checkpoint.CheckpointSave`` works)."""
    return iter(make_dataset(config, batch_size, rows, start))
