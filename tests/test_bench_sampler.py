"""The sampler benchmark runs and its numbers are sane (tiny sizes)."""

from stiv_jax.bench import sampler
from stiv_jax.bench.trainer import Arch, Shape


def test_schedule_distances():
    out = sampler.schedule_distances(num_samples=256, dim=4)
    assert set(out) == {
        f"{d}/{k}"
        for d in ("gaussian", "mixture")
        for k in ("lq50_vs_lin250", "lin50_vs_lin250", "lq50_vs_exact", "lin50_vs_exact", "lin250_vs_exact")
    }
    assert all(0 < v < 1 for v in out.values()), out
    for data in ("gaussian", "mixture"):  # Euler converges: 250 steps beat 50
        assert out[f"{data}/lin250_vs_exact"] < out[f"{data}/lin50_vs_exact"]


def test_cfg_batching():
    out = sampler.cfg_batching(batch=1, num_frames=2, size=4, channels=4, width=16, depth=1, repeats=2)
    assert out["batched_2b_s"] > 0 and out["two_b_calls_s"] > 0
    assert out["tokens_per_sample"] == 32


def test_sampler_stiv_cfg_sampling_tiny():
    """50-step JIT-CFG sampling vs 2×steps single forwards: same sample, timings and memory reported."""
    r = sampler.stiv_cfg_sampling(
        Shape(batch=1, frames=2, size=8, text_len=4, text_dim=16),
        Arch(layers=3, width=64, heads=2, temporal_patch=2),
        steps=3,
        repeats=1,
    )
    assert r["jit_cfg_sample_s"] > 0 and r["separate_forwards_s"] > 0
    assert r["sampler_compile_s"] > 0 and r["sampler_memory_mb"] > 0
    # The timed Python loop of single forwards computes the same sample as the jitted sampler.
    # The weights are perturbed, so guidance really moves the sample away from the noise.
    assert r["max_abs_diff"] < 1e-4 * r["sample_rms"], r
    assert r["distance_from_noise"] > 1e-2 * r["sample_rms"], r
