"""The real stiv_jax train step (``stiv_jax.train.setup.build``) at a benchmark size.

:class:`StivStep` builds the trainer exactly as ``stiv-train`` does (AdaFactor + clipping + EMA,
flow-matching loss with frame-replacement tasks and condition dropout, MaskDiT when
``mask_ratio > 0``), feeds it a fixed latent-cache batch (cached text embeddings, so no encoder
runs inside the step), and exposes one blocking :meth:`StivStep.step`, its parameter count, its
analytic model FLOPs and XLA's memory estimate.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import ml_collections
import numpy as np
from absl import flags

from stiv_jax.model.flops import train_step_flops
from stiv_jax.model.micro import micro_conditions
from stiv_jax.parallel.mesh import make_mesh
from stiv_jax.parallel.rules import axis_rules
from stiv_jax.train.config import base_config
from stiv_jax.train.setup import build


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark workload: latents ``[batch, frames, size, size, channels]`` and text."""

    batch: int = 4
    frames: int = 8
    size: int = 32
    channels: int = 4
    text_len: int = 32
    text_dim: int = 256


@dataclasses.dataclass(frozen=True)
class Arch:
    """Model size. ``layers`` counts every block (main + MaskDiT decoder blocks)."""

    layers: int = 6
    width: int = 384
    heads: int = 6
    decoder_blocks: int = 2
    patch: int = 2
    temporal_patch: int = 1  # 1 = one token per latent frame (Latte's layout); STIV uses 2
    layout: str = "factorised"  # 'factorised' (spatial + temporal) | 'joint' (full 3D attention)


def define_workload_flags(fv: flags.FlagValues, shape: Shape, arch: Arch, *, text: bool = True) -> None:
    """Defines the flags every model benchmark shares, with ``shape``/``arch`` as defaults:
    ``--batch --frames --size [--text_len --text_dim] --layers --width --heads``."""
    d = dict(flag_values=fv)
    flags.DEFINE_integer("batch", shape.batch, "Clips per step.", **d)
    flags.DEFINE_integer("frames", shape.frames, "Latent frames.", **d)
    flags.DEFINE_integer("size", shape.size, "Latent height = width.", **d)
    if text:
        flags.DEFINE_integer("text_len", shape.text_len, "Caption tokens.", **d)
        flags.DEFINE_integer("text_dim", shape.text_dim, "Caption embedding width.", **d)
    flags.DEFINE_integer(
        "layers", arch.layers, "Blocks, including the 2 MaskDiT decoder blocks (Latte: spatial+temporal pairs).", **d
    )
    flags.DEFINE_integer("width", arch.width, "Model width.", **d)
    flags.DEFINE_integer("heads", arch.heads, "Attention heads.", **d)


def workload(fv: flags.FlagValues, arch: Arch = Arch()) -> tuple[Shape, Arch]:
    """The ``Shape`` and ``Arch`` (other fields from ``arch``) that parsed workload flags describe."""
    text = dict(text_len=fv.text_len, text_dim=fv.text_dim) if "text_len" in fv else {}
    shape = Shape(batch=fv.batch, frames=fv.frames, size=fv.size, **text)
    return shape, dataclasses.replace(arch, layers=fv.layers, width=fv.width, heads=fv.heads)


def bench_config(
    shape: Shape,
    arch: Arch,
    *,
    mask_ratio: float = 0.0,
    remat: str = "dots",
    dtype: str = "float32",
    scan_layers: bool = False,
) -> ml_collections.ConfigDict:
    """A training config for ``shape``/``arch`` on one device, reading latent-cache batches.

    Choices measured on the 2-core CPU (default Latte workload, interleaved medians):

    - layers unrolled (``scan_layers=False``): the benchmark models have at most 8 blocks, so
      compile time stays small, and the step no longer stacks each layer's residuals into
      ``[layers, ...]`` buffers (zero-fill, dynamic-update-slice, reload: 9.5% of the profiled
      step). Batch 2: scan 14.79 s, unrolled 12.94 s per step (1.14×). Large models (the GPU
      recipe) keep the scan.
    - remat ``dots`` (save matmul outputs and attention probabilities, recompute elementwise
      work): with the scan at batch 1, 'none' 8.31 s, 'save_self_attn' 8.57 s, 'dots' 7.38 s;
      unrolled at batch 2, 'dots' 12.94 s and 'none' 13.06 s (a tie).
    """
    main = arch.layers - arch.decoder_blocks
    if main < 1:
        raise ValueError(f"layers={arch.layers} must exceed decoder_blocks={arch.decoder_blocks}")
    c = base_config(
        "small",
        num_layers=main,
        num_decoder_blocks=arch.decoder_blocks,
        hidden_size=arch.width,
        num_heads=arch.heads,
        text_dim=shape.text_dim,
        in_channels=shape.channels,
        patch_size=arch.patch,
        temporal_patch_size=arch.temporal_patch,
        temporal_attention=arch.layout == "factorised",
        attention_layout=arch.layout,
        rope_ref_grid=(max(shape.frames // arch.temporal_patch, 1), shape.size // arch.patch, shape.size // arch.patch),
        remat_policy=remat,
        dtype=dtype,
        scan_layers=scan_layers,
    )
    c.batch_size = shape.batch
    c.mesh.fsdp = 1
    c.mask_ratio = mask_ratio
    c.text.kind = "cached"
    c.autoencoder.kind = "pixel"  # unused: latent batches skip the autoencoder
    c.data.mode = "latents"
    c.data.max_text_length = shape.text_len
    c.data.num_frames = shape.frames
    return c


def latent_batch(shape: Shape, seed: int = 0) -> tuple[dict, dict]:
    """A latent-cache batch and the null-text encoding, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    b, L, D = shape.batch, shape.text_len, shape.text_dim
    lengths = rng.integers(L // 2, L + 1, b)
    batch = dict(
        latents=rng.standard_normal((b, shape.frames, shape.size, shape.size, shape.channels)).astype(np.float32),
        text_emb=rng.standard_normal((b, L, D)).astype(np.float32),
        text_mask=np.arange(L)[None] < lengths[:, None],
        pooled_text=rng.standard_normal((b, D)).astype(np.float32),
        micro=np.tile(micro_conditions(orig_h=256, orig_w=256, frame_stride=3, num_frames=shape.frames), (b, 1)),
    )
    null = dict(
        text=np.zeros((1, L, D), np.float32), text_mask=np.arange(L)[None] < 1, pooled_text=np.zeros((1, D), np.float32)
    )
    return batch, null


class StivStep:
    """A compiled stiv_jax train step on a fixed batch; :meth:`step` runs one and blocks."""

    def __init__(
        self, config: ml_collections.ConfigDict, shape: Shape, seed: int = 0, compiler_options: dict | None = None
    ):
        self.config, self.shape = config, shape
        self.mesh = make_mesh(config.mesh, jax.devices()[:1])
        batch, null = latent_batch(shape, seed)
        with self._context():
            self.training = build(config, self.mesh)
            self.state = self.training.init()
            self.batch = jax.device_put(batch)
            self.frozen = self.training.frozen(null)
            start = time.perf_counter()
            self.compiled = self.training.step.lower(self.state, self.batch, self.frozen).compile(compiler_options)
            self.compile_seconds = time.perf_counter() - start
        self.num_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.state["params"]))
        self.flops = train_step_flops(
            config.model,
            batch=shape.batch,
            frames=shape.frames,
            height=shape.size,
            width=shape.size,
            text_len=shape.text_len,
            mask_ratio=config.mask_ratio,
        )

    def _context(self):
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(axis_rules(None))
        return stack

    def step(self) -> float:
        """Runs one step (state donated and replaced) and returns the loss."""
        self.state, metrics = self.compiled(self.state, self.batch, self.frozen)
        return float(metrics["loss"])

    def memory_bytes(self) -> dict[str, int]:
        """XLA's static estimate: arguments, outputs, temporaries and their peak sum (no aliasing)."""
        m = self.compiled.memory_analysis()
        out = dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes, temporaries=m.temp_size_in_bytes)
        out["peak"] = out["arguments"] + out["outputs"] + out["temporaries"] - m.alias_size_in_bytes
        return out
