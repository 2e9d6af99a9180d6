"""GPU recipe: MFU of the XL-256 train step and the Latte comparison, in one script.

  python -m stiv_jax.bench.gpu [--batch=4] [--repeats=5] [--peer_batch=2]

1. Dense bf16 matmul rate of this device (8192³, timed) and its datasheet peak when known.
2. The XL-256 train step as the paper trains it (28 blocks × 1152 + 2 MaskDiT decoder blocks,
   20 latent frames of 32×32×4 = 256² through the ×8 VAE, temporal patch 2, mask ratio 0.5,
   128 CLIP-bigG text tokens, bf16 compute with float32 weights, cuDNN flash attention through
   ``jax.nn.dot_product_attention``, the paper's remat policy): model FLOP/s (analytic counter)
   as MFU against the datasheet peak and as a fraction of the measured matmul rate.
3. The peer comparison at XL width/depth (``stiv-bench latte``'s matching: temporal patch 1,
   mask ratio 0; Latte in bf16 autocast with PyTorch SDPA), interleaved medians.

The last line is ``mfu=<float> fraction_of_matmul_peak=<float> speedup_vs_latte=<float>``.
``--size=tiny --attention_impl=xla --dtype=float32`` with small shapes dry-runs the recipe on a
CPU (tests/test_bench.py does).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.latte import LatteStep
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' datasheets.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100": 989.4,
    "A100": 312.0,
    "L4": 121.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def datasheet_peak(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by (a prefix of) its device kind, or ``None``."""
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name.lower() in device_kind.lower():
            return BF16_PEAK_TFLOPS[name] * 1e12
    return None


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("size", "XL", "Model size (stiv_jax/model/config.py).", **d)
    flags.DEFINE_integer("batch", 4, "Clips per step (MFU run).", **d)
    flags.DEFINE_integer("frames", 20, "Latent frames (paper: 20).", **d)
    flags.DEFINE_integer("latent_size", 32, "Latent height = width (256 px through the ×8 VAE).", **d)
    flags.DEFINE_integer("text_len", 128, "Caption tokens.", **d)
    flags.DEFINE_integer("text_dim", 1280, "Caption embedding width (CLIP-bigG).", **d)
    flags.DEFINE_float("mask_ratio", 0.5, "MaskDiT ratio of the MFU run.", **d)
    flags.DEFINE_string("dtype", "bfloat16", "Compute dtype (weights stay float32).", **d)
    flags.DEFINE_string("attention_impl", "cudnn", "model.attention_impl.", **d)
    flags.DEFINE_string("remat", "save_self_attn", "model.remat_policy.", **d)
    flags.DEFINE_integer("matmul_size", 8192, "n of the n×n×n reference matmul.", **d)
    flags.DEFINE_integer("peer_batch", 2, "Clips per step of the Latte comparison (0 skips it).", **d)
    flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", **d)
    return fv


def model_arch(size: str) -> Arch:
    from stiv_jax.model.config import SIZES

    layers, width, heads = SIZES[size]
    return Arch(layers=layers + 2, width=width, heads=heads, temporal_patch=2)


def _config(shape: Shape, arch: Arch, fv, *, mask_ratio: float):
    c = bench_config(shape, arch, mask_ratio=mask_ratio, remat=fv.remat, dtype=fv.dtype, scan_layers=True)
    c.model.attention_impl = fv.attention_impl
    return c


def main(argv: list[str] | None = None) -> dict[str, float]:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv_jax.bench.gpu")
    dev = jax.devices()[0]
    print(timing.machine())
    dtype = jnp.dtype(fv.dtype)
    dot, dot_flops = timing.matmul_fn(fv.matmul_size, dtype)
    peak = datasheet_peak(dev.device_kind) if dev.platform == "gpu" and dtype == jnp.bfloat16 else None

    arch = model_arch(fv.size)
    shape = Shape(batch=fv.batch, frames=fv.frames, size=fv.latent_size, text_len=fv.text_len, text_dim=fv.text_dim)
    step = StivStep(_config(shape, arch, fv, mask_ratio=fv.mask_ratio), shape)
    t = timing.interleaved({"step": step.step, "matmul": dot}, repeats=fv.repeats, warmup=1)
    achieved = step.flops / t.median("step")
    matmul_rate = dot_flops / t.median("matmul")
    out = dict(
        step_s=t.median("step"),
        model_tflop_per_s=achieved / 1e12,
        matmul_tflop_per_s=matmul_rate / 1e12,
        fraction_of_matmul_peak=achieved / matmul_rate,
        mfu=achieved / (peak or matmul_rate),
    )
    print(
        "mfu run:",
        timing.report(
            **dataclasses.asdict(shape),
            model_size=fv.size,
            mask_ratio=fv.mask_ratio,
            dtype=fv.dtype,
            attention=fv.attention_impl,
            params=step.num_params,
            compile_s=step.compile_seconds,
        ),
    )
    print(timing.report(datasheet_tflop_per_s=(peak or float("nan")) / 1e12, **out))
    del step

    out["speedup_vs_latte"] = float("nan")
    if fv.peer_batch:
        peer_shape = dataclasses.replace(shape, batch=fv.peer_batch)
        peer_arch = dataclasses.replace(arch, temporal_patch=1)
        ours = StivStep(_config(peer_shape, peer_arch, fv, mask_ratio=0.0), peer_shape)
        device = "cuda" if dev.platform == "gpu" else "cpu"
        latte = LatteStep(
            peer_shape,
            peer_arch,
            threads=timing.cpu_threads() if device == "cpu" else None,
            device=device,
            autocast_dtype=fv.dtype if dtype != jnp.float32 else None,
        )
        tp = timing.interleaved({"latte": latte.step, "stiv": ours.step}, repeats=fv.repeats, warmup=1)
        out["speedup_vs_latte"] = tp.paired_ratio("latte", "stiv")
        print(
            "peer:",
            timing.report(
                **dataclasses.asdict(peer_shape),
                stiv_step_s=tp.median("stiv"),
                latte_step_s=tp.median("latte"),
                stiv_params=ours.num_params,
                latte_params=latte.num_params,
                stiv_train_flops=ours.flops,
                latte_train_flops=latte.flops,
            ),
        )
    timing.headline(
        f"mfu={out['mfu']:.4f} fraction_of_matmul_peak={out['fraction_of_matmul_peak']:.4f} "
        f"speedup_vs_latte={out['speedup_vs_latte']:.4f}"
    )
    return out


if __name__ == "__main__":
    main()
