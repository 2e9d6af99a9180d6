"""Achieved FLOP/s of the stiv_jax train step against this machine's dense matmul rate.

Model FLOPs come from the analytic counter (stiv_jax/model/flops.py: every matmul, attention in
full, cross-attention included, backward = 2× forward, no remat recomputation). The reference
rate is a large ``jnp.dot`` in the step's dtype, timed in the same run and interleaved with the
steps; the fraction is the median of per-round fractions, so both halves of a pair saw the same
machine load. On an accelerator this fraction is the usual MFU with
the measured matmul rate standing in for the datasheet peak.

Next to it, a batched matmul of the spatial attention's QKᵀ shape (sequences × heads problems of
tokens × head width) is timed in the same rounds, with the cores each reference kept busy: XLA's
CPU backend runs a batched dot on one core, which is what caps attention there (docs/results.md).

Run: ``stiv-bench mfu`` (last line ``fraction_of_matmul_peak=<float>``).
"""

from __future__ import annotations

import dataclasses

import jax
from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config, define_workload_flags, workload


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    define_workload_flags(fv, Shape(batch=2), Arch())
    flags.DEFINE_integer("temporal_patch", 1, "Temporal patch size (STIV: 2; 1 = the Latte workload).", **d)
    flags.DEFINE_float("mask_ratio", 0.0, "MaskDiT ratio (FLOPs counted on the kept tokens).", **d)
    flags.DEFINE_string("remat", "dots", "model.remat_policy.", **d)
    flags.DEFINE_integer("matmul_size", 2048, "n of the n×n×n reference matmul.", **d)
    flags.DEFINE_integer("matmul_calls", 10, "Matmuls per timed reference call.", **d)
    flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", **d)
    return fv


def attention_problem(shape: Shape, arch: Arch) -> tuple[int, int, int]:
    """``(batch, tokens, head width)`` of the spatial attention's QKᵀ in one train step's forward."""
    frames = shape.frames // arch.temporal_patch
    return shape.batch * frames * arch.heads, (shape.size // arch.patch) ** 2, arch.width // arch.heads


def measure(
    step: StivStep, *, matmul_size: int, matmul_calls: int, repeats: int, attention: tuple[int, int, int]
) -> dict[str, float]:
    """Interleaved medians of the train step, of ``matmul_calls`` reference matmuls and of as many
    batched matmuls of the ``attention`` problem (``(batch, tokens, head width)``)."""
    dtype = jax.numpy.dtype(step.config.model.dtype)
    dot, dot_flops = timing.matmul_fn(matmul_size, dtype)
    bdot, bdot_flops = timing.batched_matmul_fn(*attention, dtype)

    def calls(fn):
        def run():
            for _ in range(matmul_calls):
                fn()

        return run

    fns = {"step": step.step, "matmul": calls(dot), "attention_matmul": calls(bdot)}
    t = timing.interleaved(fns, repeats=repeats, warmup=1)
    step_s = t.median("step")
    matmul_rate = matmul_calls * dot_flops / t.median("matmul")
    achieved = step.flops / step_s
    # fraction per round = (flops / step_i) / (matmul flops / matmul_i); its median is the figure
    fraction = t.paired_ratio("matmul", "step") * step.flops / (matmul_calls * dot_flops)
    return dict(
        step_s=step_s,
        step_spread=t.spread("step"),
        model_flops=step.flops,
        achieved_gflop_per_s=achieved / 1e9,
        matmul_gflop_per_s=matmul_rate / 1e9,
        matmul_cores=t.cores("matmul"),
        attention_matmul_gflop_per_s=matmul_calls * bdot_flops / t.median("attention_matmul") / 1e9,
        attention_matmul_cores=t.cores("attention_matmul"),
        step_cores=t.cores("step"),
        fraction=fraction,
    )


def main(argv: list[str] | None = None) -> float:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench mfu")
    shape, arch = workload(fv, Arch(temporal_patch=fv.temporal_patch))
    print(timing.machine())
    print(
        "workload:",
        timing.report(
            **dataclasses.asdict(shape), **dataclasses.asdict(arch), mask_ratio=fv.mask_ratio, remat=fv.remat
        ),
    )
    step = StivStep(bench_config(shape, arch, mask_ratio=fv.mask_ratio, remat=fv.remat), shape)
    r = measure(
        step,
        matmul_size=fv.matmul_size,
        matmul_calls=fv.matmul_calls,
        repeats=fv.repeats,
        attention=attention_problem(shape, arch),
    )
    print(
        timing.report(
            params=step.num_params, compile_s=step.compile_seconds, **{k: v for k, v in r.items() if k != "fraction"}
        )
    )
    timing.headline(f"fraction_of_matmul_peak={r['fraction']:.4f}")
    return r["fraction"]


if __name__ == "__main__":
    main()
