"""Sampler benchmarks: schedule accuracy on exact flows, and the batched JIT-CFG forward.

Run: ``python -m stiv_jax.bench.sampler`` (``stiv-bench sampler`` dispatches to :func:`main`).

1. :func:`schedule_distances`: from the same noise, Euler samples of exact flow-matching
   velocities (``sampling/analytic.py``) with a 50-step linear-quadratic grid (emulating 250) and a
   50-step linear grid, each compared with a 250-step linear sample (Movie Gen's claim, notes §9)
   and with the exact ODE endpoint (Gaussian: closed form; mixture: 2000 Heun steps). Two data
   sets: a Gaussian (affine flow) and a mixture of narrow Gaussians (curved flow).
2. :func:`cfg_batching`: JIT-CFG needs F(cT, cI) and F(∅, ∅); the sampler runs both in one model
   call on 2B inputs. This times that call against two B-sized calls of the stand-in network.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.bench import standin
from stiv_jax.sampling import analytic, ode, schedules


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
    grids = {"lq50": schedules.linear_quadratic(50, 250), "lin50": schedules.linear(50),
             "lin250": schedules.linear(250)}
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


def cfg_batching(batch: int = 2, num_frames: int = 4, size: int = 8, channels: int = 8,
                 width: int = 128, depth: int = 4, repeats: int = 20) -> dict[str, float]:
    """Seconds for one 2B forward vs two B forwards of the stand-in network (medians)."""
    params = standin.init(0, channels=channels, text_dim=32, width=width, depth=depth)
    forward = jax.jit(functools.partial(standin.apply, params))
    cond, _ = standin.example_conditions(1, 2 * batch, text_dim=32)
    cond["micro"] = jnp.ones((2 * batch, 6), jnp.float32)
    cond["cond_mask"] = jnp.zeros((2 * batch, num_frames), bool)
    x = jnp.asarray(np.random.default_rng(2).standard_normal(
        (2 * batch, num_frames, size, size, channels)), jnp.float32)
    t = jnp.full((2 * batch,), 0.5)
    halves = [jax.tree.map(lambda a, i=i: a[i * batch:(i + 1) * batch], (x, t, cond))
              for i in range(2)]
    batched = _median_time(lambda: forward(x, t, cond), repeats)
    separate = _median_time(lambda: [forward(*h) for h in halves], repeats)
    return {"batched_2b_s": batched, "two_b_calls_s": separate,
            "batched_speedup": separate / batched,
            "tokens_per_sample": num_frames * size * size, "batch": batch}


def main(argv: list[str] | None = None) -> None:
    """Prints the schedule distances and the CFG batching timing (``key=value`` lines)."""
    del argv
    print(f"device={jax.devices()[0].platform}")
    for key, value in schedule_distances().items():
        print(f"{key}={value:.6f}")
    settings = (dict(batch=1, num_frames=2, size=4, width=32, depth=1),  # dispatch-bound
                dict(batch=1), dict(batch=2, num_frames=8))
    for setting in settings:
        result = cfg_batching(**setting)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in result.items()))


if __name__ == "__main__":
    main()
