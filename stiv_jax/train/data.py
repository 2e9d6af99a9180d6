"""Training input: Grain iterators yielding per-process numpy batches, and their assembly into
globally sharded ``jax.Array`` batches (``jax.make_array_from_process_local_data``).

``data.kind='shards'`` streams ArrayRecord shards (stiv_jax/data/pipeline.py);
``data.kind='synthetic'`` is a small in-memory pool of moving-square clips for tests and smoke
runs, built with Grain too so its iterator state checkpoints exactly like the real one.
"""

from __future__ import annotations

import os

import grain
import jax
import ml_collections
import numpy as np

from stiv_jax.parallel.mesh import batch_sharding


class SyntheticClip:
    """Clip ``i`` of the pool: a coloured square moving in one of four directions."""

    def __init__(self, frames: int, size: int, text_length: int):
        self.frames, self.size, self.text_length = frames, size, text_length

    def __call__(self, i: int) -> dict[str, np.ndarray]:
        i = int(i)
        rng = np.random.default_rng(i)
        colour = rng.uniform(-1.0, 1.0, 3).astype(np.float32)
        dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][i % 4]
        side = max(2, self.size // 4)
        y0, x0 = rng.integers(0, self.size - side, 2)
        video = np.full((self.frames, self.size, self.size, 3), -0.8, np.float32)
        for f in range(self.frames):
            y = int(np.clip(y0 + dy * f, 0, self.size - side))
            x = int(np.clip(x0 + dx * f, 0, self.size - side))
            video[f, y : y + side, x : x + side] = colour
        ids = np.zeros(self.text_length, np.int32)
        ids[:3] = [3 + i % 50, 53 + i % 4, 1]  # "<colour id> <direction id> </s>"
        mask = ids > 0
        micro = np.array([self.size, self.size, 0, 0, 1, self.frames], np.float32)
        return dict(video=video, text_ids=ids, text_mask=mask, micro=micro)


def synthetic_dataset(config: ml_collections.ConfigDict, per_process_batch: int, process_index: int, process_count: int) -> grain.IterDataset:
    d = config.data
    ds = grain.MapDataset.range(d.synthetic_examples).repeat(None).seed(config.seed).shuffle()
    ds = ds[process_index::process_count]
    ds = ds.map(SyntheticClip(d.num_frames, d.resolution, d.max_text_length))
    return ds.batch(per_process_batch, drop_remainder=True).to_iter_dataset()


def make_iterator(config: ml_collections.ConfigDict, per_process_batch: int, process_index: int | None = None, process_count: int | None = None):
    """A checkpointable Grain iterator of per-process batches (dicts of numpy arrays)."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if config.data.kind == "synthetic":
        return iter(synthetic_dataset(config, per_process_batch, pi, pc))
    if config.data.kind == "shards":
        from stiv_jax.data.pipeline import make_iterator as shard_iterator

        return shard_iterator(config, pi, pc, per_process_batch)
    raise ValueError(f"config.data.kind={config.data.kind!r}; use 'shards' or 'synthetic'")


def null_text_for(config: ml_collections.ConfigDict) -> dict | None:
    """Latent-cache runs read the empty-prompt encoding written next to the cached shards."""
    if config.text.kind != "cached":
        return None
    path = os.path.join(config.data.path, "null_text.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: latent-cache runs need the null-text encoding written by stiv-encode-shards")
    with np.load(path) as z:
        return {k: z[k] for k in ("text", "text_mask", "pooled_text")}


def to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Per-process numpy batch → global arrays sharded over ``('data', 'fsdp')``."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v) for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
