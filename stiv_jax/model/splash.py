"""Flash attention on TPU through the Pallas splash kernel (``model.attention_impl='splash'``).

XLA's attention materialises the ``[heads, Sq, Sk]`` score matrix in float32. For STIV-M at 512²
the decoder blocks' spatial attention sees 32×32 = 1024 tokens per frame, 10 temporal patches and
48 heads: 2 GiB of scores per clip, plus probabilities and their gradients during the backward
pass, which alone overflows a 16 GiB v5e chip (docs/training.md, "Memory on TPU"). The splash kernel
(``jax.experimental.pallas.ops.tpu.splash_attention``) streams key/value blocks through VMEM with
an online softmax and never stores the scores.

The kernel has no automatic SPMD partitioning, so under a mesh it runs inside ``jax.shard_map``
with the attention batch sharded like the logical ``batch`` axis and heads like ``act_heads``
(stiv_jax/parallel/rules.py): every device attends over its own clips and heads. A key padding
mask ``[N, 1, 1, Sk]`` (cross-attention to text) becomes segment ids (padding keys get a segment
no query has). Sequences the kernel cannot tile (lengths not a multiple of 128, e.g. temporal
attention over 10 patches, where the scores are tiny anyway) fall back to ``softmax_attention.softmax_attention``, the ``xla`` path.
Off TPU the kernel runs in Pallas' interpreter (tests/test_splash.py compares it with XLA).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

from stiv_jax.model.softmax_attention import softmax_attention
from stiv_jax.parallel.rules import logical_to_spec

TILE = 128  # lane width: both sequence lengths must be multiples of it
BLOCKS = (512, 256, 128)  # largest tile that divides the sequence is used


def supported(q_len: int, kv_len: int) -> bool:
    """Whether the kernel can tile ``q_len × kv_len`` attention."""
    return q_len % TILE == 0 and kv_len % TILE == 0


def _block(n: int) -> int:
    return next(b for b in BLOCKS if n % b == 0)


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, q_len: int, kv_len: int, interpret: bool):
    bq, bkv = _block(q_len), _block(kv_len)
    sizes = splash.BlockSizes(
        block_q=bq,
        block_kv=bkv,
        block_kv_compute=bkv,
        block_q_dkv=bq,
        block_kv_dkv=bkv,
        block_kv_dkv_compute=bkv,
        block_q_dq=bq,
        block_kv_dq=bkv,
    )
    mask = splash_mask.MultiHeadMask([splash_mask.FullMask((q_len, kv_len))] * heads)
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _target_platform() -> str:
    device = jax.sharding.get_abstract_mesh().abstract_device
    return device.platform if device is not None else jax.default_backend()


def _local_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_valid: jax.Array | None, interpret: bool
) -> jax.Array:
    """Per-device attention: ``[n, S, h, D]`` inputs, ``kv_valid [n, Sk]`` or ``None``."""
    n, sq, h, d = q.shape
    kernel = _kernel(h, sq, k.shape[1], interpret)
    heads_major = lambda a: a.transpose(0, 2, 1, 3)
    q = heads_major(q * jnp.asarray(d**-0.5, q.dtype))
    k, v = heads_major(k), heads_major(v)
    if kv_valid is None:
        out = jax.vmap(kernel)(q, k, v)
    else:
        seg = lambda qs, kvs: splash.SegmentIds(q=qs, kv=kvs)
        ids = jax.vmap(seg)(jnp.ones((n, sq), jnp.int32), kv_valid.astype(jnp.int32))
        out = jax.vmap(lambda a, b, c, s: kernel(a, b, c, segment_ids=s))(q, k, v, ids)
    return heads_major(out)


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *, interpret: bool | None = None
) -> jax.Array:
    """Softmax attention on ``[N, S, H, D]`` inputs, like ``jax.nn.dot_product_attention``.

    ``mask`` may only be a key padding mask broadcastable as ``[N, 1, 1, Sk]`` (True = attend).
    ``interpret=None`` runs the compiled kernel when the mesh (or default backend) is a TPU.
    """
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([k, v])
    n, sq, h, _ = q.shape
    sk = k.shape[1]
    kv_valid = None
    if mask is not None:
        if mask.ndim != 4 or mask.shape[1:3] != (1, 1):
            raise ValueError(f"splash attention takes only a key padding mask [N, 1, 1, Sk], got {mask.shape}")
        kv_valid = jnp.broadcast_to(mask[:, 0, 0, :], (n, sk))
    if not supported(sq, sk):
        return softmax_attention(q, k, v, mask)
    if interpret is None:
        interpret = _target_platform() != "tpu"
    fn = functools.partial(_local_attention, interpret=interpret)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v, kv_valid)
    spec = logical_to_spec(("batch", None, "act_heads", None))
    row = jax.sharding.PartitionSpec(spec[0], None)
    if kv_valid is None:
        return jax.shard_map(
            lambda a, b, c: fn(a, b, c, None), mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=False
        )(q, k, v)
    return jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec, row), out_specs=spec, check_vma=False)(
        q, k, v, kv_valid
    )
