"""MaskDiT's token gather/scatter stays local to each device's clips under batch sharding: no
collective in the compiled program (a batch-index scatter once all-gathered the global batch)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stiv_jax.model import maskdit


def test_gather_and_scatter_compile_without_collectives():
    mesh = jax.make_mesh((8,), ("fsdp",), devices=jax.devices()[:8])
    b, tt, s, d = 8, 2, 16, 4
    x = jax.random.normal(jax.random.key(0), (b, tt, s, d))
    keep = maskdit.sample_keep_indices(jax.random.key(1), b, s, 0.5)
    fill = jnp.arange(d, dtype=jnp.float32)

    def roundtrip(x, keep):
        kept = maskdit.gather_tokens(x, keep)
        return maskdit.scatter_tokens(kept, keep, s, fill), maskdit.token_keep_mask(keep, s)

    rows = NamedSharding(mesh, P("fsdp"))
    fn = jax.jit(roundtrip, in_shardings=(rows, rows), out_shardings=(rows, rows))
    hlo = fn.lower(x, keep).compile().as_text()
    for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
        assert op not in hlo, op

    full, visible = fn(x, keep)
    visible = np.asarray(visible)
    np.testing.assert_array_equal(visible.sum(-1), keep.shape[1])
    np.testing.assert_array_equal(
        np.asarray(full)[np.broadcast_to(visible[:, None], (b, tt, s))],
        np.asarray(x)[np.broadcast_to(visible[:, None], (b, tt, s))],
    )
    np.testing.assert_array_equal(
        np.asarray(full)[~np.broadcast_to(visible[:, None], (b, tt, s))],
        np.broadcast_to(fill, (b * tt * (s - keep.shape[1]), d)),
    )
