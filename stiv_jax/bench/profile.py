"""Where a train step's time goes, per op class and phase, for stiv_jax and for diffusers' Latte.

stiv_jax: one step traced with ``jax.profiler``; each traced XLA op is looked up in the compiled
HLO and classed by what it computes — ``matmul:attention`` (dots from the attention einsums),
``matmul:dense`` (every other dot: projections, MLPs), ``transpose/copy``, ``reduction`` (norms,
softmax sums, loss), ``elementwise`` — and by phase from its ``op_name``: ``forward`` (``jvp``),
``backward`` (``transpose(jvp …)``, remat recomputation included) and ``update`` (the rest: clip,
AdaFactor, EMA). Matmul classes also get their FLOP rate (FLOPs of their dots from the HLO shapes,
remat recomputation included; Latte's: its FlopCounterMode count over its matmul time), and every
class the memory rate its ops moved (bytes of each op's operands and result over its time), which
shows memory-bound classes that run below the machine's memory rate.
Latte: one step under ``torch.profiler``; ``aten`` ops classed the same way by name, phases from
``record_function`` ranges of :class:`~stiv_jax.bench.latte.LatteStep`.

Each side runs in its own process (bench/latte.py). Run: ``stiv-bench profile`` (the Latte
workload, mask ratio 0; last line ``stiv_matmul_share=… latte_matmul_share=…``).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import math
import multiprocessing
import re
import tempfile

from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.trainer import Arch, Shape, define_workload_flags, workload

CLASSES = ("matmul:dense", "matmul:attention", "transpose/copy", "reduction", "elementwise")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{$")
# name = type opcode(args)rest, where a tuple type holds spaces and at most one level of nested tuples
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\((?:[^()]|\([^()]*\))*\)|\S+) ([\w\-]+)\(([^)]*)\)(.*)$")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_CONTAINERS = {"while", "call", "conditional"}  # their bodies' ops are traced on their own


@dataclasses.dataclass
class Instr:
    computation: str
    opcode: str
    shape: tuple[int, ...]
    args: list[str]
    calls: str | None
    op_name: str
    rest: str
    nbytes: int = 0  # size of the result


_ELEMENT_BYTES = dict(pred=1, s8=1, u8=1, bf16=2, f16=2, s16=2, f32=4, s32=4, u32=4, f64=8, s64=8)


def _dims(type_text: str) -> tuple[int, ...]:
    """The shape of an array type; ``()`` for a tuple (a multi-output fusion's result)."""
    m = None if type_text.startswith("(") else _ARRAY.match(type_text)
    return tuple(int(d) for d in m.group(2).split(",") if d) if m else ()


def _nbytes(type_text: str) -> int:
    """Bytes of an array type, or of every array of a tuple type."""
    return sum(
        _ELEMENT_BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(type_text)
    )


def parse_hlo(text: str) -> dict[str, Instr]:
    """Every instruction of an HLO module text: ``{name: Instr}``."""
    out, comp = {}, ""
    for line in text.splitlines():
        if m := _HEADER.match(line):
            comp = m.group(1)
        elif m := _INSTR.match(line):
            name, type_text, opcode, args, rest = m.groups()
            calls = re.search(r"calls=%([\w.\-]+)", rest)
            op_name = re.search(r'op_name="([^"]*)"', rest)
            out[name] = Instr(
                comp,
                opcode,
                _dims(type_text),
                [a.strip().lstrip("%") for a in args.split(",") if a.strip()],
                calls.group(1) if calls else None,
                op_name.group(1) if op_name else "",
                rest,
                _nbytes(type_text),
            )
    return out


def by_computation(instrs: dict[str, Instr]) -> dict[str, list[Instr]]:
    """The instructions of each computation (what :func:`classify` looks inside fusions with)."""
    out = collections.defaultdict(list)
    for i in instrs.values():
        out[i.computation].append(i)
    return out


def dot_flops(instr: Instr, instrs: dict[str, Instr]) -> float:
    """2 · output elements · contracted size of one ``dot``."""
    lhs = instrs.get(instr.args[0]) if instr.args else None
    dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr.rest)
    if lhs is None or dims is None:
        return 0.0
    contracted = math.prod(lhs.shape[int(d)] for d in dims.group(1).split(",") if d)
    return 2.0 * math.prod(instr.shape) * contracted


def _is_attention_einsum(op_name: str) -> bool:
    """An attention einsum's spec names query and key positions (``…q…,…k…->…``)."""
    return any("->" in seg and "q" in seg and "k" in seg for seg in op_name.split("/"))


def classify(
    name: str, instrs: dict[str, Instr], by_comp: dict[str, list[Instr]]
) -> tuple[str, str, float, int] | None:
    """``(class, phase, dot FLOPs, bytes of its operands and result)`` of a traced op; None for
    containers and unknown names."""
    instr = instrs.get(name)
    if instr is None or instr.opcode in _CONTAINERS:
        return None
    inner = by_comp.get(instr.calls, []) if instr.calls else [instr]
    dots = [i for i in inner if i.opcode in ("dot", "convolution")]
    opcodes = {i.opcode for i in inner}
    if dots:
        attention = any(_is_attention_einsum(d.op_name) for d in dots)
        cls = "matmul:attention" if attention else "matmul:dense"
    elif opcodes & {"transpose", "copy"} or "transpose" in name or name.startswith("copy"):
        cls = "transpose/copy"
    elif opcodes & {"reduce", "reduce-window"}:
        cls = "reduction"
    else:
        cls = "elementwise"
    op = instr.op_name
    phase = "backward" if "transpose(" in op else "forward" if "jvp(" in op else "update"
    moved = instr.nbytes + sum(instrs[a].nbytes for a in instr.args if a in instrs)
    return cls, phase, sum(dot_flops(d, instrs) for d in dots), moved


def _table(
    side: str, by_class: dict, by_phase: dict, flops: dict, step_s: float, moved: dict | None = None
) -> dict[str, float]:
    total = sum(by_class.values()) or 1.0
    for cls in CLASSES:
        extra = {}
        if flops.get(cls) and by_class.get(cls):
            extra["gflop_per_s"] = flops.get(cls, 0.0) / by_class[cls] / 1e9
        if moved and by_class.get(cls):
            extra.update(gib=moved.get(cls, 0) / 2**30, gb_per_s=moved.get(cls, 0) / by_class[cls] / 1e9)
        print(
            timing.report(
                side=side, op_class=cls, ms=1e3 * by_class.get(cls, 0.0), share=by_class.get(cls, 0.0) / total, **extra
            )
        )
    for phase, seconds in sorted(by_phase.items()):
        print(timing.report(side=side, phase=phase, ms=1e3 * seconds, share=seconds / total))
    matmul_s = by_class.get("matmul:dense", 0.0) + by_class.get("matmul:attention", 0.0)
    rate = sum(flops.values()) / matmul_s / 1e9 if matmul_s else float("nan")
    print(timing.report(side=side, step_s=step_s, traced_ops_s=total, matmul_gflop_per_s=rate))
    return {cls: by_class.get(cls, 0.0) / total for cls in CLASSES}


def profile_stiv(shape: Shape, arch: Arch, mask_ratio: float) -> dict:
    import jax

    from stiv_jax.bench.trainer import StivStep, bench_config

    step = StivStep(bench_config(shape, arch, mask_ratio=mask_ratio), shape)
    step.step()
    instrs = parse_hlo(step.compiled.as_text())
    by_comp = by_computation(instrs)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            step_s = timing.interleaved({"step": step.step}, repeats=1, warmup=0).median("step")
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    by_class, by_phase, flops, moved = (collections.Counter() for _ in range(4))
    for e in events:
        if (c := classify(e["name"], instrs, by_comp)) is not None:
            cls, phase, f, nbytes = c
            by_class[cls] += e["dur"] / 1e6
            by_phase[phase] += e["dur"] / 1e6
            flops[cls] += f
            moved[cls] += nbytes
    return dict(by_class=by_class, by_phase=by_phase, flops=flops, step_s=step_s, moved=moved)


_ATEN = {  # aten op name → class (the rest: elementwise)
    "matmul:dense": ("addmm", "mm", "linear", "matmul"),
    "matmul:attention": ("bmm", "baddbmm"),
    "transpose/copy": ("copy_", "contiguous", "clone", "cat", "permute", "transpose", "_to_copy", "index"),
    "reduction": ("norm", "sum", "mean", "softmax", "var", "max", "layer_norm", "_foreach_norm"),
}


def _aten_class(name: str) -> str:
    op = name.removeprefix("aten::")
    if "scaled_dot_product" in op or "flash_attention" in op:
        return "matmul:attention"
    for cls, keys in _ATEN.items():
        if any(op == k or op.startswith(k) for k in keys):
            return cls
    return "elementwise"


def profile_latte(shape: Shape, arch: Arch) -> dict:
    import time

    import torch

    from stiv_jax.bench.latte import LatteStep

    latte = LatteStep(shape, arch, timing.cpu_threads())
    latte.step()
    acts = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=acts) as prof:
        start = time.perf_counter()
        latte.step()
        step_s = time.perf_counter() - start
    by_class, by_phase = collections.Counter(), collections.Counter()
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            by_class[_aten_class(e.key)] += e.self_cpu_time_total / 1e6
        elif e.key.startswith("latte:"):
            by_phase[e.key.removeprefix("latte:")] += e.cpu_time_total / 1e6
    flops = {"matmul": latte.flops}  # FlopCounterMode: forward + backward matmuls and attention
    return dict(by_class=by_class, by_phase=by_phase, flops=flops, step_s=step_s)


def _run(side: str, shape: Shape, arch: Arch, mask_ratio: float, conn) -> None:
    conn.send(profile_stiv(shape, arch, mask_ratio) if side == "stiv" else profile_latte(shape, arch))


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    define_workload_flags(fv, Shape(batch=4), Arch())
    flags.DEFINE_float("mask_ratio", 0.0, "MaskDiT ratio of the stiv_jax step.", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> dict:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench profile")
    shape, arch = workload(fv)
    print(timing.machine())
    print("workload:", timing.report(**dataclasses.asdict(shape), **dataclasses.asdict(arch), mask_ratio=fv.mask_ratio))
    ctx, shares = multiprocessing.get_context("spawn"), {}
    for side in ("stiv", "latte"):  # one process per side, one after the other
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_run, args=(side, shape, arch, fv.mask_ratio, child))
        proc.start()
        timing.watch([proc.pid])
        result = parent.recv()
        timing.watch().sample()  # its CPU time, before it exits
        proc.join(timeout=60)
        name = "stiv_jax" if side == "stiv" else "latte"
        tables = {k: result[k] for k in ("by_class", "by_phase", "flops", "step_s")}
        shares[side] = _table(name, **tables, moved=result.get("moved"))
    matmul = {s: v["matmul:dense"] + v["matmul:attention"] for s, v in shares.items()}
    timing.headline(f"stiv_matmul_share={matmul['stiv']:.3f} latte_matmul_share={matmul['latte']:.3f}")
    return shares
