"""Cloud TPU slice shapes: accelerator type -> chips, hosts (TPU VM workers), topology, runtime.

The number in an accelerator type counts TensorCores, not chips: v4 and v5p have two
TensorCores per chip (v5p-128 = 64 chips), v5e and v6e have one (v5litepod-256 = 256 chips).
Every multi-host slice of these generations has one TPU VM ("worker") per 4 chips, so
v5litepod-256 runs 64 workers and v5p-128 runs 16; a single-host slice holds up to 8 chips
(v5e, v6e) or 4 chips (v4, v5p) on one VM. Topologies follow Cloud TPU's slice shapes:
2D tori for v5e/v6e (16x16 for 256 chips) and 3D for v4/v5p (4x4x4 for 64 chips).
"""

from __future__ import annotations

import dataclasses
import math
import re

CHIPS_PER_HOST = 4  # every worker VM of a multi-host v4/v5p/v5e/v6e slice holds 4 chips


@dataclasses.dataclass(frozen=True)
class Generation:
    name: str  # short name: v4, v5p, v5e, v6e
    prefix: str  # the accelerator-type prefix gcloud expects
    cores_per_chip: int  # TensorCores per chip (what the type's number counts)
    max_single_host_chips: int  # largest slice served by a single VM
    runtime_version: str  # default TPU VM software version
    torus_dims: int  # 2 for v5e/v6e, 3 for v4/v5p


GENERATIONS = {
    g.prefix: g
    for g in (
        Generation("v4", "v4", 2, 4, "tpu-ubuntu2204-base", 3),
        Generation("v5p", "v5p", 2, 4, "v2-alpha-tpuv5", 3),
        Generation("v5e", "v5litepod", 1, 8, "v2-alpha-tpuv5-lite", 2),
        Generation("v6e", "v6e", 1, 8, "v2-alpha-tpuv6e", 2),
    )
}
_ALIASES = {"v5e": "v5litepod"}  # people say v5e-256; gcloud wants v5litepod-256
_TYPE_RE = re.compile(r"^(v4|v5p|v5e|v5litepod|v6e)-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Slice:
    """One TPU slice, as the launcher needs to know it."""

    accelerator_type: str  # canonical gcloud spelling, e.g. v5litepod-256
    generation: Generation
    chips: int
    hosts: int  # TPU VM workers (gcloud ... ssh --worker=0..hosts-1)
    chips_per_host: int
    topology: str | None  # e.g. 16x16, 4x4x4; None where no regular shape is derived

    @property
    def runtime_version(self) -> str:
        return self.generation.runtime_version

    def summary(self) -> str:
        shape = f" ({self.topology})" if self.topology else ""
        return (
            f"{self.accelerator_type}: {self.generation.name}, {self.chips} chips{shape}, "
            f"{self.hosts} worker(s) x {self.chips_per_host} chips"
        )


def topology(chips: int, torus_dims: int) -> str | None:
    """The slice shape for a power-of-two chip count, e.g. (256, 2) -> '16x16'.

    Slices grow by doubling the last of their smallest dimensions: 2D 1x1, 1x2, 2x2, 2x4, 4x4,
    ... 16x16; 3D starts from the single-host 2x2x1 and goes 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8.
    Returns None for other counts (e.g. v5p-384 = 4x4x12), which gcloud still accepts.
    """
    if chips < 1 or chips & (chips - 1):
        return None
    dims = [1] * torus_dims
    if torus_dims == 3 and chips >= 4:
        dims = [2, 2, 1]
    while math.prod(dims) < chips:
        smallest = min(dims)
        last = max(i for i, d in enumerate(dims) if d == smallest)
        dims[last] *= 2
    return "x".join(map(str, dims))


def parse(accelerator_type: str) -> Slice:
    """Parses v5litepod-256 / v5e-256 / v5p-128 / v4-32 / v6e-64 into a Slice."""
    match = _TYPE_RE.match(accelerator_type.strip().lower())
    if not match:
        raise ValueError(
            f"unknown accelerator type {accelerator_type!r}; expected v4-N, v5p-N, "
            "v5litepod-N (alias v5e-N) or v6e-N, with N the TensorCore count"
        )
    prefix, cores = _ALIASES.get(match.group(1), match.group(1)), int(match.group(2))
    gen = GENERATIONS[prefix]
    if cores == 0 or cores % gen.cores_per_chip:
        raise ValueError(
            f"{accelerator_type!r}: {gen.name} has {gen.cores_per_chip} TensorCores per chip, "
            "so N must be a positive multiple of that"
        )
    chips = cores // gen.cores_per_chip
    if chips <= gen.max_single_host_chips:
        hosts, per_host = 1, chips
    elif chips % CHIPS_PER_HOST:
        raise ValueError(f"{accelerator_type!r}: a multi-host slice needs a multiple of {CHIPS_PER_HOST} chips")
    else:
        hosts, per_host = chips // CHIPS_PER_HOST, CHIPS_PER_HOST
    return Slice(f"{prefix}-{cores}", gen, chips, hosts, per_host, topology(chips, gen.torus_dims))
