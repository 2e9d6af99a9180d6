"""Ahead-of-time compilation of the real train step for a TPU topology, on any host (MaxText's
train_compile). ``libtpu`` (the ``tpu`` extra) compiles for e.g. ``v5e:16x16`` without TPUs, and
the compiled executable reports per-device memory and FLOPs: a run that does not fit fails here,
in seconds, instead of on the pod after provisioning.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from stiv_jax.errors import UserError
from stiv_jax.model.flops import train_step_flops
from stiv_jax.parallel.mesh import make_mesh, replicated
from stiv_jax.parallel.rules import axis_rules

# HBM XLA gives one chip, GiB, as its RESOURCE_EXHAUSTED messages state it (measured 2026-12-02;
# docs/training.md "Memory on TPU"). A compile can succeed above it, so the report checks.
CAPACITY_GIB = {"v5e": 15.75, "v5litepod": 15.75, "v5p": 95.74, "v6e": 31.25}


def capacity_bytes(topology: str) -> int | None:
    """Per-chip HBM of the topology's generation (``v5e:16x16`` → v5e), None when unknown."""
    gib = CAPACITY_GIB.get(topology.split(":", 1)[0].split("-", 1)[0].lower())
    return None if gib is None else int(gib * 2**30)


class DoesNotFit(UserError):
    """The step needs more memory per chip than the chip has."""


@dataclasses.dataclass
class AotReport:
    topology: str
    num_devices: int
    mesh: dict
    per_device_batch: float
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    generated_code_bytes: int
    xla_flops: float
    model_flops: float
    capacity_bytes: int | None = None

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.total_bytes <= self.capacity_bytes

    @property
    def total_bytes(self) -> int:
        """Peak per-device HBM: arguments + outputs (minus the donated, aliased ones) + temps."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.generated_code_bytes

    def render(self) -> str:
        gib = lambda n: f"{n / 2**30:8.3f} GiB"
        fits = {True: "yes", False: "no", None: "unknown"}[self.fits]
        return "\n".join(
            [
                f"topology        {self.topology} ({self.num_devices} devices), mesh {self.mesh}",
                f"batch           {self.per_device_batch:g} per device",
                f"arguments       {gib(self.argument_bytes)}   (params, EMA, optimizer state, batch)",
                f"outputs         {gib(self.output_bytes)}   (aliased with donated inputs: {gib(self.alias_bytes).strip()})",
                f"temporaries     {gib(self.temp_bytes)}   (activations saved for backward, workspace)",
                f"code            {gib(self.generated_code_bytes)}",
                f"total           {gib(self.total_bytes)}   per device",
                f"FLOPs/step      {self.model_flops:.4g} model (analytic), {self.xla_flops:.4g} XLA per device",
                f"capacity        {'unknown' if self.capacity_bytes is None else gib(self.capacity_bytes)}   per chip",
                f"per_device_total_bytes={self.total_bytes} flops_per_step={self.model_flops:.12g} "
                f"capacity_bytes={self.capacity_bytes or 0} fits={fits}",
            ]
        )


def tpu_devices(topology: str):
    """Devices of a TPU topology description, e.g. ``v5e:16x16`` or ``v5p:4x4x8``."""
    from jax.experimental import topologies

    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU is opened: skip libtpu's lockfile
    return topologies.get_topology_desc(topology, "tpu").devices


def compile_train_step(config: ml_collections.ConfigDict, devices, topology: str = "") -> AotReport:
    """Lowers and compiles the train step for ``devices`` with abstract inputs only."""
    from stiv_jax.train.setup import build

    mesh = make_mesh(config.mesh, devices)
    with jax.set_mesh(mesh), axis_rules(tuple(config.sharding_rules) if config.sharding_rules else None):
        tr = build(config, mesh, abstract=True)
        rep = replicated(mesh)
        frozen = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
            tr.conditioner.frozen_params(tr.abstract_null_text()),
        )
        batch = tr.abstract_batch()
        try:
            compiled = tr.step.lower(tr.abstract_state, batch, frozen).compile()
        except Exception as e:  # XLA's out-of-memory report: one line for the user
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            detail = next((line.strip() for line in str(e).splitlines() if "RESOURCE_EXHAUSTED" in line), str(e))
            raise DoesNotFit(f"the train step does not fit {topology or 'the devices'}: {detail[:400]}") from e
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    lat = batch["latents"].shape if "latents" in batch else None
    t, r = config.data.num_frames, config.data.resolution
    h = lat[2] if lat else r // config.autoencoder.downsample
    flops = train_step_flops(
        config.model,
        batch=config.batch_size,
        frames=t,
        height=h,
        width=h,
        text_len=config.data.max_text_length,
        mask_ratio=config.mask_ratio,
    )
    return AotReport(
        topology=topology or str(devices[0].platform),
        num_devices=len(devices),
        mesh=dict(zip(mesh.axis_names, mesh.axis_sizes)),
        per_device_batch=config.batch_size / len(devices),
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        generated_code_bytes=int(mem.generated_code_size_in_bytes),
        xla_flops=float(cost.get("flops", np.nan)) if cost else float("nan"),
        model_flops=flops,
        capacity_bytes=capacity_bytes(topology) if topology else None,
    )
