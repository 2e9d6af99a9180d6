"""The benchmarks run end to end at tiny sizes and keep their output contracts.

These check plumbing and bookkeeping (interleaving, FLOP and parameter counts, the last-line
contracts documented in docs/results.md, the GPU recipe's CPU dry run), never speed: timings are measured by
``stiv-bench`` on purpose-sized workloads, not in tests.
"""

import os
import re
import subprocess
import sys
import time

import jax
import pytest

from stiv_jax.bench import cli, gpu, i3d, latte, mfu, remat, scaling, timing
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config

TINY = [
    "--batch=1",
    "--frames=2",
    "--size=8",
    "--text_len=4",
    "--text_dim=16",
    "--layers=3",
    "--width=64",
    "--heads=2",
    "--repeats=1",
]


LOAD_FIELDS = r" load_before=\S+ load_after=\S+ cores=\d+ others_cpu=\S+ quiet=(?:yes|no) malloc=(?:keep|default)"


def _last_value(out: str, key: str) -> float:
    """The headline value of the last line (``key=value`` followed by the load fields)."""
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(rf"{key}=(\S+){LOAD_FIELDS}", last)
    assert m, last
    return float(m.group(1))


def test_interleaved_alternates_and_takes_medians():
    calls = []
    t = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert len(t.seconds["a"]) == len(t.seconds["b"]) == 3
    t.seconds["a"] = [3.0, 1.0, 2.0]
    assert t.median("a") == 2.0 and t.spread("a") == 1.0
    with pytest.raises(ValueError):
        timing.interleaved({"a": lambda: None}, repeats=0)


def test_cores_is_cpu_time_over_wall_time():
    """interleaved records the process's CPU seconds per call: none for a sleep, at least what a
    spin loop burned; cores() is the median of per-call ratios (not a ratio of medians). A batched
    matmul's figure comes with its FLOPs (2·batch·n²·d)."""

    def spin(cpu_seconds=0.03):
        end = time.process_time() + cpu_seconds
        while time.process_time() < end:
            pass

    t = timing.interleaved({"sleep": lambda: time.sleep(0.05), "spin": spin}, repeats=3, warmup=0)
    # min: XLA's CPU threads may still be busy for ~0.1 s after an earlier test's large program
    assert min(t.cpu_seconds["sleep"]) < 0.01 and min(t.cpu_seconds["spin"]) >= 0.03, t.cpu_seconds
    t = timing.Timings({"a": [1.0, 2.0, 4.0]}, {"a": [3.0, 1.0, 2.0]})
    assert t.cores("a") == 0.5  # per-call ratios 3, 0.5, 0.5; the ratio of medians would be 1
    _, flops = timing.batched_matmul_fn(3, 8, 4)
    assert flops == 2 * 3 * 8 * 8 * 4
    run, flops = timing.matmul_fn(16)
    assert flops == 2 * 16**3 and run().shape == (16, 16)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    t = timing.Timings({"a": [2.0, 4.0, 9.0], "b": [1.0, 4.0, 3.0]})
    assert t.paired_ratio("a", "b") == 2.0  # ratios 2, 1, 3; the ratio of medians would be 4 / 3
    with pytest.raises(ValueError):
        timing.Timings({"a": [1.0], "b": [1.0, 2.0]}).paired_ratio("a", "b")


def _busy_process(seconds: float):
    """A child process that keeps one core busy (another job on the machine)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def test_load_watch_sees_other_processes_but_not_its_own_workers():
    busy = _busy_process(3.0)
    watch = timing.LoadWatch()
    time.sleep(2.0)
    fields = watch.fields()
    busy.wait()
    assert fields["others_cpu"] >= 0.6 and fields["quiet"] == "no", fields
    assert fields["cores"] == timing.cpu_threads() and fields["load_before"] >= 0
    # The same work declared as the benchmark's own: over one window, a watch that owns the worker
    # sees less of the machine than one that does not, by the worker's own CPU (read from /proc
    # independently), however busy the rest of the machine is (e.g. other test workers).
    worker = _busy_process(2.5)
    start, everyone, mine = time.perf_counter(), timing.LoadWatch(), timing.LoadWatch([worker.pid])
    time.sleep(2.0)
    mine.sample()
    worker_cores = timing._process_seconds(worker.pid) / (time.perf_counter() - start)
    seen_by_all, seen_by_mine = everyone.fields(), mine.fields()
    worker.wait()
    assert worker_cores > 0.05, worker_cores
    gap = seen_by_all["others_cpu"] - seen_by_mine["others_cpu"]
    assert abs(gap - worker_cores) <= 0.15, (gap, worker_cores, seen_by_all, seen_by_mine)


def test_stiv_bench_refuses_a_loaded_machine_unless_allowed():
    """The console script: a busy neighbour makes ``stiv-bench mfu`` print quiet=no on its last
    line and exit 2 with one error line; ``--allow_loaded`` keeps the figure (exit 0). The last
    line names the host allocator settings the figure was taken with (``--malloc``)."""
    tiny = TINY + ["--matmul_size=64", "--matmul_calls=1"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "STIV_BENCH_SETTLE_S": "0"}
    exe = os.path.join(os.path.dirname(sys.executable), "stiv-bench")
    cases = (([], 2, "keep"), (["--allow_loaded", "--malloc=default"], 0, "default"))
    busy, procs = _busy_process(300.0), []  # both runs at once beside one busy neighbour
    try:
        procs += [
            subprocess.Popen(
                [exe, "mfu", *tiny, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            for extra, _, _ in cases
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        busy.kill()
        for p in procs:
            p.kill()
    for (_, code, malloc), p, (stdout, stderr) in zip(cases, procs, outputs):
        assert p.returncode == code, stderr[-2000:]
        last = stdout.strip().splitlines()[-1]
        assert re.fullmatch(rf"fraction_of_matmul_peak=\S+{LOAD_FIELDS}", last), last
        assert last.endswith(f"quiet=no malloc={malloc}"), last
        errors = stderr.strip().splitlines()
        if code:
            assert len(errors) == 1 and errors[0].startswith("stiv-bench: error: the machine was loaded"), errors


def test_settle_waits_for_the_load_average_to_fall(monkeypatch, capsys):
    loads = iter([9.0, 5.0, 0.5, 0.5])
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    slept = []
    assert timing.settle(max_wait_s=60, poll_s=5, sleep=slept.append) == 0.5 and slept == [5, 5]
    assert "waiting up to 60s for the load average (9.00)" in capsys.readouterr().out
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert timing.settle(max_wait_s=10, poll_s=5, sleep=slept.append) == 9.0 and len(slept) == 4  # gives up


def test_stiv_step_counts_and_trains():
    shape = Shape(batch=1, frames=2, size=8, text_len=4, text_dim=16)
    step = StivStep(bench_config(shape, Arch(layers=3, width=64, heads=2)), shape)
    n = sum(x.size for x in jax.tree.leaves(step.state["params"]))
    assert step.num_params == n
    assert step.flops > 0 and step.memory_bytes()["peak"] > 0
    losses = [step.step() for _ in range(3)]
    assert all(0 < x < 10 for x in losses)
    assert int(step.state["step"]) == 3


def test_latte_comparison_tiny(capsys):
    speedup = latte.main(TINY + ["--mask_ratios=0.5,0"])
    out = capsys.readouterr().out
    assert _last_value(out, "speedup_vs_latte") == pytest.approx(speedup, rel=1e-3) and speedup > 0
    (lat,) = re.findall(r"side=latte .*params=(\d+) train_flops=(\S+)", out)
    assert int(lat[0]) > 0 and float(lat[1]) > 0
    assert len(re.findall(r"side=stiv_jax mask_ratio=", out)) == 2
    assert len(re.findall(r"side=\w+ .*page_faults=\d+ ", out)) == 3  # each worker's count per step


def test_minor_faults_counts_fresh_memory():
    import numpy as np

    before = timing.minor_faults()
    fresh = np.ones((64 << 20) // 8)  # 64 MiB written: mapped and zeroed by the kernel
    assert timing.minor_faults() - before >= 32, "64 MiB cannot be fewer than 32 huge pages"
    del fresh


def test_latte_flops_scale_with_batch():
    """FlopCounterMode's count is per step: doubling the batch doubles it."""
    one, two = (
        latte.LatteStep(
            Shape(batch=b, frames=2, size=8, text_len=4, text_dim=16), Arch(layers=2, width=64, heads=2)
        ).flops
        for b in (1, 2)
    )
    assert two == pytest.approx(2 * one, rel=1e-6)


def test_mfu_tiny(capsys):
    fraction = mfu.main(TINY + ["--matmul_size=128", "--matmul_calls=2"])
    out = capsys.readouterr().out
    assert _last_value(out, "fraction_of_matmul_peak") == pytest.approx(fraction, rel=1e-3)
    assert 0 < fraction < 10
    figures = dict(re.findall(r"(\w+_(?:gflop_per_s|cores))=(\S+)", out))
    assert set(figures) >= {"matmul_cores", "attention_matmul_gflop_per_s", "attention_matmul_cores", "step_cores"}
    assert all(float(v) > 0 for v in figures.values()), figures
    # The default workload's spatial attention: 2 clips × 8 frames × 6 heads, 16² tokens, width 64.
    assert mfu.attention_problem(Shape(batch=2), Arch()) == (96, 256, 64)
    assert mfu.attention_problem(Shape(batch=2), Arch(temporal_patch=2, patch=4)) == (48, 64, 64)


def test_scaling_tiny(capsys):
    rows = scaling.main(
        [
            "--frames=2,4",
            "--sizes=8",
            "--base_size=8",
            "--base_frames=2",
            "--layers=3",
            "--width=64",
            "--heads=2",
            "--repeats=1",
            "--temporal_patch=1",
        ]
    )
    out = capsys.readouterr().out
    assert {(r["layout"], r["frames"]) for r in rows} >= {
        ("factorised", 2),
        ("joint", 2),
        ("factorised", 4),
        ("joint", 4),
    }
    by = {(r["layout"], r["frames"], r["size"]): r for r in rows}
    # Joint attention's share of the FLOPs grows with the frame count; the factorised one's less.
    assert by[("joint", 4, 8)]["attention_share"] > by[("joint", 2, 8)]["attention_share"]
    assert by[("joint", 4, 8)]["attention_share"] > by[("factorised", 4, 8)]["attention_share"]
    assert "joint_over_factorised_time=" in out


def test_gpu_recipe_dry_run_on_cpu(capsys):
    out = gpu.main(
        [
            "--size=tiny",
            "--batch=1",
            "--frames=2",
            "--latent_size=8",
            "--text_len=4",
            "--text_dim=16",
            "--dtype=float32",
            "--attention_impl=xla",
            "--remat=dots",
            "--matmul_size=128",
            "--peer_batch=1",
            "--repeats=1",
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mfu=") and "speedup_vs_latte=" in last
    assert out["mfu"] > 0 and out["speedup_vs_latte"] > 0
    assert gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert gpu.datasheet_peak("cpu") is None


def test_cli_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(["nope"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "stiv-bench: error: the first argument must be one of latte, mfu, sampler, scaling, remat, data, profile, i3d, all (--help for more)"
    )
    with pytest.raises(SystemExit) as e:
        cli.run(["all", "--batch=1"])
    assert e.value.code == 2 and "takes no flags" in capsys.readouterr().err
    assert cli._pop_malloc(["--batch=1", "--malloc", "default", "--repeats=2"]) == (
        "default",
        ["--batch=1", "--repeats=2"],
    )
    assert cli._pop_malloc(["--malloc=default", "--malloc=keep"]) == ("keep", [])
    with pytest.raises(SystemExit) as e:
        cli.run(["mfu", "--malloc=tcmalloc"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "stiv-bench: error: --malloc must be one of keep, default, got 'tcmalloc'"


def test_remat_tiny(capsys):
    ratio = remat.main(TINY + ["--policies=full,none", "--repeats=2"])
    out = capsys.readouterr().out
    assert _last_value(out, "full_vs_none") == pytest.approx(ratio, rel=1e-3) and ratio > 0
    peak = {m[0]: float(m[1]) for m in re.findall(r"policy=(\w+) step_ms=\S+ spread=\S+ peak_mib=(\S+)", out)}
    assert set(peak) == {"full", "none"}
    # Recomputing everything keeps fewer activations alive than saving them all.
    assert peak["full"] < peak["none"]
    with pytest.raises(ValueError, match="--policies=dots"):
        remat.main(TINY + ["--policies=dots"])
    with pytest.raises(ValueError, match="--policies=dots,nope"):
        remat.main(TINY + ["--policies=dots,nope"])


def test_i3d_times_both_convolutions_and_they_agree(capsys):
    ratio = i3d.main(["--batch=1", "--frames=9", "--repeats=1"])
    out = capsys.readouterr().out
    assert _last_value(out, "frames_on_channels_vs_xla") == pytest.approx(ratio, rel=1e-3) and ratio > 0
    assert set(re.findall(r"conv=(\w+) forward_ms=", out)) == {"frames_on_channels", "xla"}
    diff, peak = (float(re.search(rf"{k}=(\S+)", out)[1]) for k in ("max_logit_difference", "max_logit"))
    assert 0 < peak and diff <= 1e-5 * peak  # the same network: float32 rounding only
    with pytest.raises(ValueError, match="--frames >= 9"):
        i3d.main(["--frames=8"])


def test_profile_classes_ops_and_counts_dot_flops():
    """HLO parsing on a known program: the attention einsum and the dense dot are told apart and
    their FLOPs are the analytic 2·M·N·K; forward/backward phases come from op names."""
    import collections

    import jax.numpy as jnp

    from stiv_jax.bench import profile

    def f(q, k, w):
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k)
        return jnp.sum(jnp.tanh(logits)) + jnp.sum((q.reshape(-1, 8) @ w) ** 2)

    q, k, w = jnp.ones((2, 16, 4, 8)), jnp.ones((2, 32, 4, 8)), jnp.ones((8, 24))
    text = jax.jit(jax.grad(f)).lower(q, k, w).compile().as_text()
    instrs = profile.parse_hlo(text)
    by_comp = profile.by_computation(instrs)
    found = collections.defaultdict(float)
    phases = set()
    for name, instr in instrs.items():
        if instr.computation.startswith("main") and (c := profile.classify(name, instrs, by_comp)):
            found[c[0]] += c[2]
            phases.add(c[1])
    attention = 2 * (2 * 4 * 16 * 32) * 8  # [n, h, q, k] logits, contracted over d
    dense = 2 * (2 * 16 * 4) * 24 * 8  # [n·q·h, d] @ [d, 24]
    # the gradient w.r.t. q: each forward dot plus one backward dot of the same size
    assert found["matmul:attention"] == 2 * attention and found["matmul:dense"] == 2 * dense, dict(found)
    assert phases >= {"forward", "backward"}


def test_profile_counts_the_bytes_an_op_moves():
    """One elementwise fusion of a float32 [256, 128] and a bfloat16 [128] operand, float32 result:
    it reads and writes 2·4·256·128 + 2·128 bytes."""
    import jax.numpy as jnp

    from stiv_jax.bench import profile

    x, b = jnp.ones((256, 128)), jnp.ones((128,), jnp.bfloat16)
    instrs = profile.parse_hlo(jax.jit(lambda x, b: jnp.tanh(x) * 3 + b).lower(x, b).compile().as_text())
    by_comp = profile.by_computation(instrs)
    (root,) = (n for n, i in instrs.items() if i.computation.startswith("main") and i.opcode == "fusion")
    cls, _, flops, moved = profile.classify(root, instrs, by_comp)
    assert (cls, flops, moved) == ("elementwise", 0.0, 2 * 4 * 256 * 128 + 2 * 128)


def test_profile_parses_instructions_with_a_tuple_result():
    """A multi-output fusion's result is a tuple type with spaces (and a while loop's may nest one):
    the op is still parsed and classed, with the bytes of every output."""
    import jax.numpy as jnp

    from stiv_jax.bench import profile

    x = jnp.ones((256, 128))
    text = jax.jit(lambda x: (jnp.sum(x * 2, axis=1), jnp.max(x * 2, axis=1))).lower(x).compile().as_text()
    text += """
%fused_computation.9 (param_0: f32[256,128]) -> (f32[256], f32[256,128]) {
  %param_0 = f32[256,128]{1,0} parameter(0)
  %sum = f32[256]{0} reduce(%param_0, %param_0), dimensions={1}
  ROOT %tuple.9 = (f32[256]{0}, f32[256,128]{1,0}) tuple(%sum, %param_0)
}
ENTRY %main.9 (x: f32[256,128]) -> f32[] {
  %x = f32[256,128]{1,0} parameter(0)
  %multi = (f32[256]{0}, f32[256,128]{1,0}) fusion(%x), kind=kLoop, calls=%fused_computation.9, metadata={op_name="jit(f)/jvp(mul)"}
  %loop = ((s32[], f32[2]{0}), bf16[4]{0}) while(%x), condition=%c, body=%b
}
"""
    instrs = profile.parse_hlo(text)
    (root,) = (i for i in instrs.values() if i.computation.startswith("main.3") and i.opcode == "tuple")
    assert (root.shape, root.nbytes) == ((), 2 * 4 * 256)
    multi = instrs["multi"]
    assert (multi.opcode, multi.args, multi.calls) == ("fusion", ["x"], "fused_computation.9")
    cls, phase, flops, moved = profile.classify("multi", instrs, profile.by_computation(instrs))
    assert (cls, phase, flops, moved) == ("reduction", "forward", 0.0, 4 * 256 + 2 * 4 * 256 * 128)
    assert (instrs["loop"].opcode, instrs["loop"].nbytes) == ("while", 4 + 8 + 8)


def test_profile_tiny(capsys):
    from stiv_jax.bench import profile

    shares = profile.main(TINY[:-1])
    out = capsys.readouterr().out
    for side in ("stiv", "latte"):
        assert sum(shares[side].values()) == pytest.approx(1.0) and shares[side]["matmul:dense"] > 0
    assert len(re.findall(r"side=stiv_jax op_class=\S+ ms=\S+ share=\S+ .*gb_per_s=", out)) == len(profile.CLASSES)
    assert re.search(r"side=latte phase=backward ms=\S+", out) and re.search(r"side=stiv_jax phase=update", out)
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"stiv_matmul_share=\S+ latte_matmul_share=\S+{LOAD_FIELDS}", last), last
