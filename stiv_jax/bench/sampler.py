"""Sampler benchmarks: schedule accuracy on exact flows, and the batched JIT-CFG forward.

Run: ``python -m stiv_jax.bench.sampler`` (``stiv-bench sampler`` dispatches to :func:`main`).

1. :func:`schedule_distances`: from the same noise, Euler samples of exact flow-matching
   velocities (``sampling/analytic.py``) with a 50-step linear-quadratic grid (emulating 250) and a
   50-step linear grid, each compared with a 250-step linear sample (Movie Gen's claim)
   and with the exact ODE endpoint (Gaussian: closed form; mixture: 2000 Heun steps). Two data
   sets: a Gaussian (affine flow) and a mixture of narrow Gaussians (curved flow).
2. :func:`cfg_batching`: JIT-CFG needs F(cT, cI) and F(∅, ∅); the sampler runs both in one model
   call on 2B inputs. This times that call against two B-sized calls of the stand-in network.
3. :func:`stiv_cfg_sampling`: the real STIV DiT. One 50-step JIT-CFG sample (the whole loop in
   one jit: ``lax.scan`` over steps, both guidance branches batched) against the same 50 steps
   done as 2×50 separately jitted single-branch forwards from Python, interleaved; compile
   times; XLA's memory estimate for the sampler program and the process's peak RSS.

Flags (sizes of part 3): ``--batch --frames --size --layers --width --heads --steps --repeats``.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from stiv_jax.bench import standin, timing
from stiv_jax.bench.trainer import Arch, Shape, bench_config, define_workload_flags, latent_batch, workload
from stiv_jax.model.dit import STIV
from stiv_jax.model.micro import MICRO_FIELDS
from stiv_jax.sampling import analytic, ode, schedules
from stiv_jax.sampling.guidance import Guidance
from stiv_jax.sampling.sampler import sample


def _rms(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a - b))))


def schedule_distances(num_samples: int = 8192, dim: int = 16, seed: int = 0) -> dict[str, float]:
    """RMS distances (per element) between samples of the same noise on different grids."""
    rng = np.random.default_rng(seed)
    mean = jnp.asarray(rng.normal(0.0, 2.0, dim), jnp.float32)
    std = jnp.asarray(rng.uniform(0.1, 1.5, dim), jnp.float32)
    components = jnp.asarray(rng.normal(0.0, 1.5, (8, dim)), jnp.float32)
    weights = jnp.asarray(rng.dirichlet(np.ones(8)), jnp.float32)
    noise = jnp.asarray(rng.standard_normal((num_samples, dim)), jnp.float32)
    fields = {
        "gaussian": lambda x, t: analytic.gaussian_velocity(x, t, mean, std),
        "mixture": lambda x, t: analytic.mixture_velocity(x, t, components, 0.05, weights),
    }
    grids = {
        "lq50": schedules.linear_quadratic(50, 250),
        "lin50": schedules.linear(50),
        "lin250": schedules.linear(250),
    }
    out = {}
    for data, velocity in fields.items():
        x = {name: ode.integrate(velocity, noise, grid) for name, grid in grids.items()}
        out[f"{data}/lq50_vs_lin250"] = _rms(x["lq50"], x["lin250"])
        out[f"{data}/lin50_vs_lin250"] = _rms(x["lin50"], x["lin250"])
        if data == "gaussian":
            exact = analytic.gaussian_flow_endpoint(noise, mean, std)
        else:
            exact = ode.integrate(velocity, noise, schedules.linear(2000), "heun")
        for name in grids:
            out[f"{data}/{name}_vs_exact"] = _rms(x[name], exact)
    return out


def _median_time(fn: Callable[[], jax.Array], repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cfg_batching(
    batch: int = 2,
    num_frames: int = 4,
    size: int = 8,
    channels: int = 8,
    width: int = 128,
    depth: int = 4,
    repeats: int = 20,
) -> dict[str, float]:
    """Seconds for one 2B forward vs two B forwards of the stand-in network (medians)."""
    params = standin.init(0, channels=channels, text_dim=32, width=width, depth=depth)
    forward = jax.jit(functools.partial(standin.apply, params))
    cond, _ = standin.example_conditions(1, 2 * batch, text_dim=32)
    cond["micro"] = jnp.ones((2 * batch, len(MICRO_FIELDS)), jnp.float32)
    cond["cond_mask"] = jnp.zeros((2 * batch, num_frames), bool)
    x = jnp.asarray(
        np.random.default_rng(2).standard_normal((2 * batch, num_frames, size, size, channels)), jnp.float32
    )
    t = jnp.full((2 * batch,), 0.5)
    halves = [jax.tree.map(lambda a, i=i: a[i * batch : (i + 1) * batch], (x, t, cond)) for i in range(2)]
    batched = _median_time(lambda: forward(x, t, cond), repeats)
    separate = _median_time(lambda: [forward(*h) for h in halves], repeats)
    return {
        "batched_2b_s": batched,
        "two_b_calls_s": separate,
        "batched_speedup": separate / batched,
        "tokens_per_sample": num_frames * size * size,
        "batch": batch,
    }


def _timed_compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _perturbed(params, scale: float = 0.02, seed: int = 0):
    """Adds N(0, scale²) to every weight: a fresh STIV's zero-initialised output layers would
    make the velocity 0 and the sample equal the noise (as if trained, without a checkpoint)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    )


def stiv_cfg_sampling(
    shape: Shape, arch: Arch, *, steps: int = 50, scale: float = 7.5, repeats: int = 2
) -> dict[str, float]:
    """A ``steps``-step JIT-CFG sample of the STIV DiT vs 2×``steps`` single-branch forwards."""
    cfg = bench_config(shape, arch).model
    graphdef, params = nnx.split(STIV(cfg, rngs=nnx.Rngs(params=0)))
    params = _perturbed(params)
    batch, null = latent_batch(shape)
    cond = dict(
        text=batch["text_emb"], text_mask=batch["text_mask"], pooled_text=batch["pooled_text"], micro=batch["micro"]
    )
    null_cond = {k: jnp.asarray(v) for k, v in null.items()}
    noise = jnp.asarray(np.random.default_rng(1).standard_normal(batch["latents"].shape), jnp.float32)
    times = schedules.linear_quadratic(steps, 250)
    guidance = Guidance(kind="jit", scale=scale)

    def jit_cfg(params, noise):
        return sample(nnx.merge(graphdef, params), noise, cond, null_cond, times, guidance=guidance)

    sampler, sampler_compile_s = _timed_compile(jit_cfg, params, noise)
    uncond = dict(
        cond,
        text=jnp.broadcast_to(null_cond["text"], cond["text"].shape),
        text_mask=jnp.broadcast_to(null_cond["text_mask"], cond["text_mask"].shape),
        pooled_text=jnp.broadcast_to(null_cond["pooled_text"], cond["pooled_text"].shape),
    )
    t0 = jnp.zeros((shape.batch,), jnp.float32)

    def single(params, x, t, c):
        return nnx.merge(graphdef, params)(x, t, **c)

    forward, forward_compile_s = _timed_compile(single, params, noise, t0, cond)
    euler = jax.jit(lambda x, vc, vu, dt: x + dt * (vu + scale * (vc - vu)))

    def loop():
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            tb = jnp.full((shape.batch,), t, jnp.float32)
            x = euler(x, forward(params, x, tb, cond), forward(params, x, tb, uncond), jnp.float32(t_next - t))
        return jax.block_until_ready(x)

    outputs = {}

    def run(name, fn):
        outputs[name] = fn()

    tm = timing.interleaved(
        {
            "jit_cfg": lambda: run("jit_cfg", lambda: jax.block_until_ready(sampler(params, noise))),
            "loop": lambda: run("loop", loop),
        },
        repeats=repeats,
        warmup=1,
    )
    mem = sampler.memory_analysis()
    # Both sides compute the same sample: their difference is float rounding only.
    max_abs_diff = float(jnp.max(jnp.abs(outputs["jit_cfg"] - outputs["loop"])))
    return dict(
        jit_cfg_sample_s=tm.median("jit_cfg"),
        separate_forwards_s=tm.median("loop"),
        max_abs_diff=max_abs_diff,
        sample_rms=float(jnp.sqrt(jnp.mean(jnp.square(outputs["loop"])))),
        distance_from_noise=float(jnp.max(jnp.abs(outputs["loop"] - noise))),
        speedup=tm.paired_ratio("loop", "jit_cfg"),
        sampler_compile_s=sampler_compile_s,
        forward_compile_s=forward_compile_s,
        sampler_memory_mb=(
            mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
        )
        / 2**20,
        sampler_temp_mb=mem.temp_size_in_bytes / 2**20,
        process_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    define_workload_flags(fv, Shape(batch=1, size=16), Arch(width=256, heads=4), text=False)
    flags.DEFINE_integer("steps", 50, "Sampling steps.", **d)
    flags.DEFINE_integer("repeats", 2, "Timed rounds (medians reported).", **d)
    return fv


def main(argv: list[str] | None = None) -> None:
    """Prints the schedule distances, the CFG batching timing and the STIV sampling benchmark
    (``key=value`` lines)."""
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench sampler")
    print(timing.machine())
    for key, value in schedule_distances().items():
        print(f"{key}={value:.6f}")
    settings = (
        dict(batch=1, num_frames=2, size=4, width=32, depth=1),  # dispatch-bound
        dict(batch=1),
        dict(batch=2, num_frames=8),
    )
    for setting in settings:
        result = cfg_batching(**setting)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    shape, arch = workload(fv, Arch(temporal_patch=2))
    print("stiv workload:", timing.report(**dataclasses.asdict(shape), **dataclasses.asdict(arch), steps=fv.steps))
    timing.headline(timing.report(**stiv_cfg_sampling(shape, arch, steps=fv.steps, repeats=fv.repeats)))


if __name__ == "__main__":
    main()
