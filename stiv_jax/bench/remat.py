"""Train-step time and memory under each ``model.remat_policy``, measured in one run.

Every policy compiles the same stiv_jax train step (``stiv_jax.bench.trainer.StivStep``) on the
same latent batch; the steps are then timed round-robin, and the ratio is the median of the
per-round ratios, so both runs of a pair saw the same machine load. The default workload is the demo's
(``experiments/demo_shapes.py``: batch 8, 4 latent frames of 12×12×12, 1×2×2 patches, width 128,
4 blocks, no MaskDiT), which is where the demo's remat choice was made.

Run: ``stiv-bench remat`` (last line ``<first>_vs_<second>=<step-time ratio>``, below 1 when the
first policy is faster).
"""

from __future__ import annotations

import dataclasses

from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config, define_workload_flags, workload
from stiv_jax.model.config import REMAT_POLICIES

DEMO_SHAPE = Shape(batch=8, frames=4, size=12, channels=12, text_len=16, text_dim=64)
DEMO_ARCH = Arch(layers=4, width=128, heads=4, decoder_blocks=0, patch=2, temporal_patch=1)


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    define_workload_flags(fv, DEMO_SHAPE, DEMO_ARCH)
    flags.DEFINE_list("policies", ["dots", "none"], f"Remat policies to compare, from {REMAT_POLICIES}.", **d)
    flags.DEFINE_bool("scan_layers", True, "Scan the blocks (as the demo and stiv-train do).", **d)
    flags.DEFINE_integer("repeats", 20, "Timed rounds (medians reported).", **d)
    return fv


def measure(steps: dict[str, StivStep], repeats: int) -> tuple[dict[str, dict[str, float]], timing.Timings]:
    """Interleaved median step time, its spread and XLA's peak-memory estimate per policy, and the
    timings (for paired ratios)."""
    t = timing.interleaved({name: s.step for name, s in steps.items()}, repeats=repeats, warmup=2)
    return {
        name: dict(
            step_ms=1e3 * t.median(name),
            spread=t.spread(name),
            peak_mib=s.memory_bytes()["peak"] / 2**20,
            compile_s=s.compile_seconds,
        )
        for name, s in steps.items()
    }, t


def main(argv: list[str] | None = None) -> float:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench remat")
    policies = list(fv.policies)
    unknown = [p for p in policies if p not in REMAT_POLICIES]
    if len(policies) < 2 or unknown or len(set(policies)) != len(policies):
        raise ValueError(f"--policies={','.join(policies)}: give two or more distinct names from {REMAT_POLICIES}")
    shape, arch = workload(fv, DEMO_ARCH)
    shape = dataclasses.replace(shape, channels=DEMO_SHAPE.channels)
    print(timing.machine())
    print(
        "workload:", timing.report(**dataclasses.asdict(shape), **dataclasses.asdict(arch), scan_layers=fv.scan_layers)
    )
    steps = {p: StivStep(bench_config(shape, arch, remat=p, scan_layers=fv.scan_layers), shape) for p in policies}
    results, t = measure(steps, fv.repeats)
    for name, r in results.items():
        print(timing.report(policy=name, **r))
    first, second = policies[:2]
    ratio = t.paired_ratio(first, second)
    timing.headline(f"{first}_vs_{second}={ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
