"""Clip shards: record schema, ArrayRecord writer, per-record index and manifest.

A shard folder holds

* ``{prefix}-NNNNN-of-MMMMM.array_record`` — ArrayRecord files written with ``group_size:1`` (the
  random access Grain needs) and no compression (clip bytes are already compressed). Each record is
  a msgpack map: ``key`` (int, unique, dense from 0), ``kind`` ('video' | 'image' | 'latent'),
  ``caption``, ``source`` (path relative to the input folder), plus the kind's payload: encoded
  clip ``data`` bytes and ``height/width/num_frames/fps/rotation/start_frame/motion/codec`` for
  pixel clips, or named numpy arrays (``{"dtype", "shape", "data"}`` maps) for latent records.
* ``index.npy`` — one row per record, in global record order (shards concatenated), with the
  fields the input pipeline needs to bucket records without reading them (``INDEX_DTYPE``).
* ``manifest.json`` — shard names/sizes/counts, skipped inputs with reasons, summary statistics
  and the settings used. It contains nothing run-specific, so equal inputs give equal folders.

A folder may be a ``gs://`` URL: ``index.npy`` and ``manifest.json`` are read and written through
``stiv_jax.storage.paths``; the shards are written to a local temporary folder and uploaded when
the writer closes, and read through the bucket's Cloud Storage FUSE mount (``paths.local_file``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
from array_record.python import array_record_module

from stiv_jax.storage import paths

WRITER_OPTIONS = "group_size:1,uncompressed"
MANIFEST = "manifest.json"
INDEX = "index.npy"
NULL_TEXT = "null_text.npz"  # latent caches with a text encoder: the empty prompt's encoding
KINDS = ("video", "image", "latent")
INDEX_DTYPE = np.dtype(
    [
        ("key", "<i8"),
        ("kind", "u1"),  # position in KINDS of the source clip ('video' or 'image')
        ("num_frames", "<i4"),  # frames (pixel shards) or latent frames (latent shards)
        ("height", "<i4"),
        ("width", "<i4"),
        ("channels", "<i4"),
        ("fps", "<f4"),
        ("motion", "<f4"),
    ]
)


def pack_array(x: np.ndarray) -> dict:
    x = np.ascontiguousarray(x)
    return {"dtype": x.dtype.str, "shape": list(x.shape), "data": x.tobytes()}


def unpack_array(d: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Serializes a record; numpy arrays become ``{"dtype", "shape", "data"}`` maps."""
    out = {k: pack_array(v) if isinstance(v, np.ndarray) else v for k, v in record.items()}
    return msgpack.packb(out, use_bin_type=True)


def decode_record(raw: bytes) -> dict:
    """Inverse of ``encode_record`` (array maps come back as read-only numpy arrays)."""
    rec = msgpack.unpackb(raw, raw=False)
    return {k: unpack_array(v) if isinstance(v, dict) and "dtype" in v else v for k, v in rec.items()}


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.array_record"


class ShardWriter:
    """Writes records into shards of ``records_per_shard``; ``close()`` names them ``-of-N`` and
    writes ``index.npy``. Earlier outputs of the same prefix in ``out_dir`` are removed first.
    A ``gs://`` ``out_dir`` is written in a local temporary folder and uploaded by ``close()``."""

    def __init__(self, out_dir: str, prefix: str = "clips", records_per_shard: int = 1000):
        if records_per_shard < 1:
            raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
        self.target, self.prefix, self.records_per_shard = out_dir, prefix, records_per_shard
        self.out_dir = tempfile.mkdtemp(prefix="stiv_shards_") if paths.is_remote(out_dir) else out_dir
        pattern = re.compile(rf"{re.escape(prefix)}-\d{{5}}(-of-\d{{5}})?\.array_record(\.tmp)?$")
        target = paths.as_path(out_dir)
        if not paths.is_remote(out_dir):
            target.mkdir(parents=True, exist_ok=True)
        for entry in target.iterdir() if target.exists() else ():  # a bucket has no empty folders
            if pattern.match(entry.name) or entry.name in (INDEX, MANIFEST):
                entry.unlink()
        self._writer = None
        self._tmp_names: list[str] = []
        self._counts: list[int] = []
        self._rows: list[tuple] = []

    def write(self, record: Mapping[str, Any], index_row: Mapping[str, Any]) -> int:
        """Appends one record; assigns and returns its ``key`` (its global position)."""
        key = len(self._rows)
        if self._writer is None or self._counts[-1] >= self.records_per_shard:
            self._roll()
        self._writer.write(encode_record({"key": key, **record}))
        self._counts[-1] += 1
        self._rows.append(tuple({**index_row, "key": key}[name] for name in INDEX_DTYPE.names))
        return key

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        name = f"{self.prefix}-{len(self._tmp_names):05d}.array_record.tmp"
        self._tmp_names.append(name)
        self._counts.append(0)
        self._writer = array_record_module.ArrayRecordWriter(os.path.join(self.out_dir, name), WRITER_OPTIONS)

    def close(self) -> list[dict]:
        """Finalizes shards; returns ``[{"name", "records", "bytes"}]`` in order."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shards = []
        for i, (tmp, count) in enumerate(zip(self._tmp_names, self._counts)):
            name = shard_name(self.prefix, i, len(self._tmp_names))
            os.replace(os.path.join(self.out_dir, tmp), os.path.join(self.out_dir, name))
            shards.append({"name": name, "records": count, "bytes": os.path.getsize(os.path.join(self.out_dir, name))})
        np.save(os.path.join(self.out_dir, INDEX), np.array(self._rows, dtype=INDEX_DTYPE))
        if self.out_dir != self.target:  # gs://: upload, then drop the local copy
            for name in [s["name"] for s in shards] + [INDEX]:
                paths.upload(os.path.join(self.out_dir, name), paths.join(self.target, name))
            shutil.rmtree(self.out_dir, ignore_errors=True)
        return shards


def write_manifest(out_dir: str, manifest: Mapping[str, Any]) -> str:
    """Writes ``manifest.json`` last: a folder with a manifest is complete."""
    return paths.write_text(paths.join(out_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def load_manifest(shard_dir: str) -> dict:
    path = paths.join(shard_dir, MANIFEST)
    if not paths.exists(path):
        raise FileNotFoundError(f"no {MANIFEST} in {shard_dir!r}: not a shard folder (run stiv-make-shards)")
    return json.loads(paths.read_text(path))


def shard_paths(shard_dir: str, what: str = "data.path", manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Local (or FUSE-mounted) shard paths in record order, as listed by the manifest (read here
    unless given); ``what`` names the setting in errors (``paths.MountError`` when a bucket is
    not mounted)."""
    names = [s["name"] for s in (manifest if manifest is not None else load_manifest(shard_dir))["shards"]]
    local_dir = paths.local_file(shard_dir, what)
    local = [os.path.join(local_dir, n) for n in names]
    missing = [p for p in local if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"shards listed in {shard_dir}/{MANIFEST} are missing: {missing[:3]}")
    return local


def load_index(shard_dir: str) -> np.ndarray:
    index = np.load(io.BytesIO(paths.read_bytes(paths.join(shard_dir, INDEX))))
    if index.dtype != INDEX_DTYPE:
        raise ValueError(f"{shard_dir}/{INDEX} has dtype {index.dtype}, expected {INDEX_DTYPE}")
    return index


def save_null_text(shard_dir: str, text: np.ndarray, text_mask: np.ndarray, pooled_text: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez(buf, text=text, text_mask=text_mask, pooled_text=pooled_text)
    return paths.write_bytes(paths.join(shard_dir, NULL_TEXT), buf.getvalue())


def load_null_text(shard_dir: str) -> dict[str, np.ndarray]:
    """``{"text", "text_mask", "pooled_text"}`` written by ``stiv-encode-shards``."""
    path = paths.join(shard_dir, NULL_TEXT)
    if not paths.exists(path):
        raise FileNotFoundError(
            f"{path} not found: latent-cache runs need the null-text encoding written by stiv-encode-shards"
        )
    with np.load(io.BytesIO(paths.read_bytes(path))) as z:
        return {k: z[k] for k in ("text", "text_mask", "pooled_text")}


def read_records(shard_dir: str) -> list[dict]:
    """All records of a shard folder, decoded, in key order (for tests and small tools)."""
    import grain

    source = grain.sources.ArrayRecordDataSource(shard_paths(shard_dir))
    return [decode_record(source[i]) for i in range(len(source))]
