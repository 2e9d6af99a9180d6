"""Grain input pipeline over clip shards (pixels) or latent-cache shards (latents).

Per bucket ``b`` (one batch shape), over the positions ``0..n-1`` of the ``n`` records that
``index.npy`` assigns to it::

    MapDataset.range(n)                                # record positions: one global stream
      .seed(seed_b).shuffle().repeat()                 # reshuffled every epoch
    Elements(.., BucketReader(...))                    # read + decode/sample/crop/tokenize (lazily)
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

**Bad records.** When the record at stream position ``j`` cannot be read (a damaged shard chunk)
or decoded (a broken video), element ``j`` is made from the record at position ``j+1`` (then
``j+2``, …) of the same bucket stream, with the random crop/stride generator of position ``j``:
every process and every resume makes the same substitute. Each element carries ``skipped``
(``int32``): how many bad records were passed over to make it (0 normally), so a run of ``r``
consecutive bad positions counts ``r + (r-1) + … + 1`` over its ``r`` elements. A warning names
the shard file, the record key and the error (once per record and process). More than
``MAX_CONSECUTIVE_BAD`` failures in a row (or all of a small bucket's records) stop with a
``UserError``. The evaluation pass (``training=False``, used by the latent cache) does not
substitute: a bad record's element is ``{"key", "skipped": 1, "error": reason}`` for the caller
to leave out and report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import grain
import ml_collections
import numpy as np

from stiv_jax.data import config as data_config
from stiv_jax.data import shards, transforms
from stiv_jax.errors import ConfigError, UserError

LATENT_FORMAT = "stiv_jax.latents.v1"
CLIP_FORMAT = "stiv_jax.clips.v1"
MAX_CONSECUTIVE_BAD = 64  # bad records in a row (per bucket stream) before the pipeline gives up
_WARNED: set[tuple[str, int]] = set()  # (shard, key) already warned about in this process


class BucketReader:
    """Reads record ``members[i]`` of ``source`` and turns it into an element with ``fn``
    (``fn(raw, rng)`` when ``random``, else ``fn(raw)``); picklable for Grain workers."""

    def __init__(
        self,
        source,
        members: np.ndarray,
        keys: np.ndarray,
        shard_files: Sequence[str],
        shard_starts: np.ndarray,
        fn: Callable[..., dict],
        random: bool,
        label: str,
    ):
        self.source, self.members, self.keys = source, np.asarray(members, np.int64), np.asarray(keys, np.int64)
        self.shard_files, self.shard_starts = list(shard_files), np.asarray(shard_starts, np.int64)
        self.fn, self.random, self.label = fn, random, label

    def __len__(self) -> int:
        return len(self.members)

    def __call__(self, i: int, rng: np.random.Generator | None) -> dict:
        raw = self.source[int(self.members[i])]
        return self.fn(raw, rng) if self.random else self.fn(raw)

    def locate(self, i: int) -> tuple[str, int]:
        """``(shard file, record key)`` of position ``i`` (from the index: no read needed)."""
        g = int(self.members[i])
        shard = int(np.searchsorted(self.shard_starts, g, side="right")) - 1
        return self.shard_files[max(shard, 0)], int(self.keys[i])

    def __repr__(self) -> str:  # grain logs this; keep it short and stable
        return f"BucketReader({self.label}: {len(self.members)} of {len(self.source)} records)"


def _rng(seed: int | None, index: int) -> np.random.Generator | None:
    """The generator ``random_map`` gives element ``index`` for ``seed`` (Philox counter reset)."""
    if seed is None:
        return None
    rng = np.random.Generator(np.random.Philox(seed))
    state = rng.bit_generator.state
    state["state"]["counter"] = np.array([0, 0, 0, index], dtype=np.uint64)
    state["buffer"] = np.array([0, 0, 0, 0], dtype=np.uint64)
    state.update(buffer_pos=4, has_uint32=0, uinteger=0)
    rng.bit_generator.state = state
    return rng


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


class Elements(grain.MapDataset):
    """Element ``j`` is ``reader(parent[j], rng_j)`` plus ``skipped``; a record that fails is
    replaced by the one at ``parent[j+1]``, ``parent[j+2]``, … (``substitute``), else reported
    as ``{"key", "skipped", "error"}`` (see the module doc). ``rng_j`` is what ``random_map`` in
    this place would pass, so a stream without bad records equals ``.random_map(fn)``'s."""

    def __init__(self, parent: grain.MapDataset, reader: BucketReader, substitute: bool = True):
        super().__init__(parent)
        self.reader, self.substitute = reader, substitute
        self.seed = int(self._default_seed) if reader.random else None
        self.max_tries = min(MAX_CONSECUTIVE_BAD, 2 * len(reader)) if substitute else 1

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        j, n = int(j), len(self._parent)
        error: Exception | None = None
        for skipped in range(self.max_tries):
            i = int(self._parent[(j + skipped) % n])
            try:
                element = self.reader(i, _rng(self.seed, j))
            except Exception as e:
                shard, key = self.reader.locate(i)
                error, reason = e, f"record key={key} in {shard}: {_reason(e)}"
                if not self.substitute:
                    return {"key": np.int32(key), "skipped": np.int32(1), "error": reason}
                if (shard, key) not in _WARNED:
                    _WARNED.add((shard, key))
                    logging.warning(
                        "%s: skipping bad %s (using the next record of the stream)", self.reader.label, reason
                    )
                continue
            element["skipped"] = np.int32(skipped)
            return element
        raise UserError(
            f"{self.reader.label}: {self.max_tries} records in a row could not be read or decoded "
            f"(the last: {reason}); the shard folder looks damaged: rebuild it (stiv-make-shards) "
            "or point data.path at another"
        ) from error

    def __str__(self) -> str:
        return f"Elements({self.reader!r}, substitute={self.substitute})"


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
    from stiv_jax.text.tokenizer import make_tokenizer

    kind = cfg.get("tokenizer", "t5")  # configs saved before data.tokenizer existed: T5
    if kind == "t5" and not cfg.tokenizer_path:
        raise ValueError("data.tokenizer_path is empty: set it to a SentencePiece model (e.g. DEMO/spm.model)")
    return make_tokenizer(kind, cfg.tokenizer_path, cfg.max_text_length)


def latent_stride_mismatch(frame_strides: Sequence[int], settings: dict) -> str | None:
    """What a latent cache encoded with ``settings`` (its manifest's) will not give a run asking for
    ``frame_strides`` (latents are fixed at encode time), or None: several strides asked of a cache
    holding one per clip, or other strides than it was encoded at."""
    cached, every = settings.get("frame_strides"), bool(settings.get("every_stride", False))
    if cached is None:
        return None
    asked = tuple(int(s) for s in frame_strides)
    if len(asked) > 1 and not every:
        return (
            f"data.frame_strides={asked} asks for several strides, but the latent cache holds each clip "
            f"once, at its first fitting stride of {tuple(cached)}: re-encode with "
            "`stiv-encode-shards --every_stride` to train on each"
        )
    # Every cached stride is trained on with --every_stride; without it, each clip has one of them.
    cached_set = {int(s) for s in cached}
    served = set(asked) == cached_set if every else set(asked) <= cached_set
    if not served:
        return (
            f"data.frame_strides={asked} differs from the strides the latent cache was encoded at, "
            f"{tuple(cached)}{' (every stride)' if every else ''}: training reads the cached ones, and "
            "sampling takes its default stride micro-condition from data.frame_strides[0]"
        )
    return None


def _element_fns(cfg: ml_collections.ConfigDict, shard_dir: str, index: np.ndarray, fmt: str | None):
    """``(shapes, assignment, [per-bucket transform], random)`` for the shard folder's format."""
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

    ``training`` shuffles and repeats (``num_epochs``) and substitutes bad records; otherwise one
    pass in key order, centred crops, bad records reported as ``{"key", "skipped", "error"}``.
    """
    cfg = resolve_data_config(config)
    data_config.validate(cfg)
    manifest = shards.load_manifest(cfg.path)  # names data.path when it is not a shard folder
    index = shards.load_index(cfg.path)
    if not len(index):
        raise UserError(f"data.path={cfg.path}: the shard folder holds no records{_empty_detail(manifest)}")
    files = shards.shard_paths(cfg.path, manifest=manifest)
    source = grain.sources.ArrayRecordDataSource(files)
    if len(source) != len(index):
        raise ValueError(f"{cfg.path}: index.npy has {len(index)} rows but the shards hold {len(source)} records")
    counts = [int(s.get("records", 0)) for s in manifest["shards"]]
    starts = np.cumsum([0, *counts[:-1]]) if sum(counts) == len(index) else np.zeros(1, np.int64)
    shapes, assignment, fns, random = _element_fns(cfg, cfg.path, index, manifest.get("format"))
    mismatch = (
        latent_stride_mismatch(cfg.frame_strides, manifest.get("settings", {})) if cfg.mode == "latents" else None
    )
    if mismatch:
        logging.warning("data.path=%s: %s", cfg.path, mismatch)
    unused = int(np.sum(assignment < 0))
    if unused:
        logging.warning("%s: %d of %d records fit no bucket in %s; not used", cfg.path, unused, len(index), shapes)
    out = []
    for b, (shape, fn) in enumerate(zip(shapes, fns)):
        members = np.flatnonzero(assignment == b)
        if not len(members):
            continue
        label = f"data.path={cfg.path} bucket {tuple(shape)}"
        reader = BucketReader(source, members, index["key"][members], files, starts, fn, random and training, label)
        ds = grain.MapDataset.range(len(members))
        if training:
            # The trailing 0 (once the process index) keeps the stream of earlier runs.
            seed = np.random.SeedSequence([int(cfg.seed), b, 0]).generate_state(1)[0]
            ds = ds.seed(int(seed)).shuffle().repeat(cfg.num_epochs or None)
        out.append((shape, len(members), Elements(ds, reader, substitute=training)))
    if not out:
        raise ConfigError(
            f"data.path={cfg.path}: no records fit the configured buckets {shapes} (of {len(index)} records; "
            "see data.buckets, data.num_frames, data.frame_strides)"
        )
    return out


def _empty_detail(manifest: dict) -> str:
    skipped = manifest.get("num_skipped")
    if skipped:
        return f" (all {skipped} inputs were skipped when it was written: see 'skipped' in its {shards.MANIFEST})"
    return " (rebuild it with stiv-make-shards or stiv-encode-shards)"


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
