"""Training input: the global batch stream, each process's rows of it, and their assembly into
globally sharded ``jax.Array`` batches.

Global batch ``k`` is a pure function of the config and ``k``: the same examples in the same
order whether 1, 2 or 64 processes read it. Each process reads only the rows that its devices hold
under the batch sharding (:func:`process_rows`: a contiguous block on a data-parallel mesh, every
row when the mesh replicates the batch), and :func:`to_global` places them on those devices. The
data position of a run is its step, so a resumed run restarts the stream at the restored step,
whatever its process count or number of data workers.

``data.kind='shards'`` streams ArrayRecord shards (stiv_jax/data/pipeline.py);
``data.kind='synthetic'`` is a small in-memory pool of moving-square clips for tests and smoke
runs, built with Grain too.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from stiv_jax.data import pipeline, shards
from stiv_jax.errors import ConfigError
from stiv_jax.model.micro import micro_conditions
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
        micro = micro_conditions(orig_h=self.size, orig_w=self.size, num_frames=self.frames)
        return dict(video=video, text_ids=ids, text_mask=mask, micro=micro)


def synthetic_dataset(
    config: ml_collections.ConfigDict, batch_size: int, rows: Sequence[int] | None = None, start: int = 0
) -> grain.IterDataset:
    d = config.data
    ds = grain.MapDataset.range(d.synthetic_examples).repeat(None).seed(config.seed).shuffle()
    ds = pipeline.batch_rows(ds.map(SyntheticClip(d.num_frames, d.resolution, d.max_text_length)), batch_size, rows)
    return (ds[start:] if start else ds).to_iter_dataset()


def process_rows(mesh: Mesh, batch_size: int, process_index: int | None = None) -> np.ndarray:
    """The rows of a global batch that ``process_index``'s devices hold (sorted)."""
    pi = jax.process_index() if process_index is None else process_index
    sharding = batch_sharding(mesh, 1)
    rows: set[int] = set()
    for device, (index,) in sharding.devices_indices_map((batch_size,)).items():
        if device.process_index == pi:
            rows.update(range(*index.indices(batch_size)))
    return np.array(sorted(rows), np.int64)


def make_iterator(
    config: ml_collections.ConfigDict, batch_size: int | None = None, rows: Sequence[int] | None = None, start: int = 0
):
    """A Grain iterator over this process's ``rows`` of each global batch of ``batch_size``
    (default ``config.batch_size``; default rows: all), from global batch ``start`` on."""
    batch_size = config.batch_size if batch_size is None else batch_size
    if config.data.kind == "synthetic":
        return iter(synthetic_dataset(config, batch_size, rows, start))
    if config.data.kind == "shards":
        return pipeline.make_iterator(config, batch_size, rows, start)
    raise ValueError(f"config.data.kind={config.data.kind!r}; use 'shards' or 'synthetic'")


def check_source(config: ml_collections.ConfigDict) -> None:
    """Fails before anything compiles when the shards cannot be read (e.g. a ``gs://``
    ``data.path`` whose bucket is not mounted: ``stiv_jax.storage.paths.MountError``)."""
    if config.data.kind == "shards":
        from stiv_jax.data import config as data_config

        data_config.validate(config.data)  # e.g. an empty data.path, named
        shards.shard_paths(config.data.path, "data.path")
        if config.data.mode == "latents":
            check_cache_autoencoder(config, shards.load_manifest(config.data.path).get("settings", {}))


def check_cache_autoencoder(config: ml_collections.ConfigDict, settings: dict) -> None:
    """A latent cache holds what its autoencoder wrote: one written by a different pixel
    autoencoder (factor, scaling or shift) than ``config.autoencoder``, or by another kind, is
    refused, since the run would train on latents its sampler decodes differently."""
    from stiv_jax.encoders.build import build_autoencoder, from_spec

    spec = settings.get("autoencoder")
    if not spec:  # written by hand or by an older version: nothing to compare
        return
    cached = from_spec(spec, what="autoencoder")
    asked = config.autoencoder
    if cached["kind"] == asked.kind == "kl":
        return  # a KL cache names its VAE by path, which may be spelled differently
    # Pixel autoencoders are frozen dataclasses: equal when factor, scaling and shift are.
    if cached["kind"] != asked.kind or build_autoencoder(cached) != build_autoencoder(asked):
        wanted = {k: asked.get(k) for k in ("kind", "downsample", "scaling_factor", "shift_factor") if k in asked}
        raise ConfigError(
            f"data.path={config.data.path}: the latent cache was written by --autoencoder={spec}, but "
            f"config.autoencoder is {wanted}; re-encode (stiv-encode-shards) or match the config"
        )


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, rows: Sequence[int], batch_size: int) -> dict[str, jax.Array]:
    """This process's ``rows`` of a global batch → global arrays of ``batch_size`` rows sharded
    over ``('data', 'fsdp')``; each local device gets exactly the rows it holds."""
    position = {int(r): i for i, r in enumerate(rows)}
    out = {}
    for k, v in batch.items():
        if not isinstance(v, np.ndarray) or v.dtype == object or k == "key":
            continue
        chex.assert_axis_dimension(v, 0, len(position))
        sharding = batch_sharding(mesh, v.ndim)
        shape = (batch_size, *v.shape[1:])
        arrays = [
            jax.device_put(v[[position[r] for r in range(*index[0].indices(batch_size))]], device)
            for device, index in sharding.addressable_devices_indices_map(shape).items()
        ]
        out[k] = jax.make_array_from_single_device_arrays(shape, sharding, arrays)
    return out
