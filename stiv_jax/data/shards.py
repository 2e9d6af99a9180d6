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
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import msgpack
import numpy as np
from array_record.python import array_record_module

WRITER_OPTIONS = "group_size:1,uncompressed"
MANIFEST = "manifest.json"
INDEX = "index.npy"
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
    writes ``index.npy``. Earlier outputs of the same prefix in ``out_dir`` are removed first."""

    def __init__(self, out_dir: str, prefix: str = "clips", records_per_shard: int = 1000):
        if records_per_shard < 1:
            raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
        self.out_dir, self.prefix, self.records_per_shard = out_dir, prefix, records_per_shard
        os.makedirs(out_dir, exist_ok=True)
        pattern = re.compile(rf"{re.escape(prefix)}-\d{{5}}(-of-\d{{5}})?\.array_record(\.tmp)?$")
        for name in os.listdir(out_dir):
            if pattern.match(name) or name in (INDEX, MANIFEST):
                os.remove(os.path.join(out_dir, name))
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
        return shards


def write_manifest(out_dir: str, manifest: Mapping[str, Any]) -> str:
    path = os.path.join(out_dir, MANIFEST)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def load_manifest(shard_dir: str) -> dict:
    path = os.path.join(shard_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {MANIFEST} in {shard_dir!r}: not a shard folder (run stiv-make-shards)")
    with open(path) as f:
        return json.load(f)


def shard_paths(shard_dir: str) -> list[str]:
    """Absolute shard paths in record order, as listed by the manifest."""
    names = [s["name"] for s in load_manifest(shard_dir)["shards"]]
    paths = [os.path.abspath(os.path.join(shard_dir, n)) for n in names]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"shards listed in {shard_dir}/{MANIFEST} are missing: {missing[:3]}")
    return paths


def load_index(shard_dir: str) -> np.ndarray:
    index = np.load(os.path.join(shard_dir, INDEX))
    if index.dtype != INDEX_DTYPE:
        raise ValueError(f"{shard_dir}/{INDEX} has dtype {index.dtype}, expected {INDEX_DTYPE}")
    return index


def read_records(shard_dir: str) -> list[dict]:
    """All records of a shard folder, decoded, in key order (for tests and small tools)."""
    import grain

    source = grain.sources.ArrayRecordDataSource(shard_paths(shard_dir))
    return [decode_record(source[i]) for i in range(len(source))]
