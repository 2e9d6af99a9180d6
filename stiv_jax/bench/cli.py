"""``stiv-bench``: the performance benchmarks behind docs/results.md's Performance section.

  stiv-bench latte    [flags]  train step vs diffusers' Latte   (last line speedup_vs_latte=…)
  stiv-bench mfu      [flags]  train-step FLOP/s vs matmul rate (last line fraction_of_matmul_peak=…)
  stiv-bench sampler  [flags]  schedules, CFG batching, 50-step JIT-CFG sampling
  stiv-bench scaling  [flags]  time/memory vs frames and resolution, factorised vs 3D attention
  stiv-bench remat    [flags]  train-step time/memory per remat policy (last line dots_vs_none=…)
  stiv-bench data     [flags]  Grain decoding throughput (bench/data_throughput.py)
  stiv-bench profile  [flags]  where the train step's time goes, per op class, vs Latte
  stiv-bench i3d      [flags]  the FVD network, frames-on-channels vs 3-D convolutions
  stiv-bench all               every benchmark above with its defaults

Flags after the command go to that benchmark (``stiv-bench latte --help`` lists them). Each
prints ``key=value`` lines; ratios are measured within one run (interleaved, paired), because
absolute times on a shared machine are noisy. Every last line also carries the machine's load
(``load_before= load_after= cores= others_cpu= quiet=``, bench/timing.py); on a loaded machine
the command fails (exit status 2) unless ``--allow_loaded``: such a figure is not a result.
``--malloc=keep`` (the default) keeps freed host memory in the benchmark's processes, which
steps with GiB of temporaries need on CPU (stiv_jax/console/host_memory.py); ``--malloc=default``
leaves glibc's defaults. The last line says which (``malloc=``).
The GPU recipe is ``python -m stiv_jax.bench.gpu``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# command -> (module, entry point taking argv)
COMMANDS = {
    "latte": ("stiv_jax.bench.latte", "main"),
    "mfu": ("stiv_jax.bench.mfu", "main"),
    "sampler": ("stiv_jax.bench.sampler", "main"),
    "scaling": ("stiv_jax.bench.scaling", "main"),
    "remat": ("stiv_jax.bench.remat", "main"),
    "data": ("stiv_jax.bench.data_throughput", "run"),
    "profile": ("stiv_jax.bench.profile", "main"),
    "i3d": ("stiv_jax.bench.i3d", "main"),
}


def _entry(command: str):
    module, fn = COMMANDS[command]
    return getattr(importlib.import_module(module), fn)


def _pop_malloc(args: list[str]) -> tuple[str, list[str]]:
    """``--malloc=MODE`` or ``--malloc MODE`` (the last one given; default ``keep``) and the other
    arguments."""
    mode, rest, it = "keep", [], iter(args)
    for a in it:
        if a == "--malloc":
            mode = next(it, "")
        elif a.startswith("--malloc="):
            mode = a.split("=", 1)[1]
        else:
            rest.append(a)
    return mode, rest


def run(argv: Sequence[str] | None = None) -> None:
    from stiv_jax.console import host_memory
    from stiv_jax.console.errors import fail, reported, verbose_from_env

    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(f"usage: stiv-bench {{{'|'.join(COMMANDS)}|all}} [flags]\n\n{__doc__}")
        return
    if not args or args[0] not in (*COMMANDS, "all"):
        fail("stiv-bench", f"the first argument must be one of {', '.join(COMMANDS)}, all (--help for more)")
    from stiv_jax.bench import timing

    name, rest = args[0], args[1:]
    strict = "--allow_loaded" not in rest
    malloc, rest = _pop_malloc([a for a in rest if a != "--allow_loaded"])
    with reported("stiv-bench", verbose="--verbose" in rest or verbose_from_env()):
        if malloc not in host_memory.MODES:
            fail("stiv-bench", f"--malloc must be one of {', '.join(host_memory.MODES)}, got {malloc!r}")
        if name == "all" and rest:
            fail("stiv-bench", "stiv-bench all takes no flags; run a single benchmark to change its sizes")
        if malloc == "keep":
            host_memory.keep_freed_memory()  # before any benchmark runs JAX or starts its workers
        if name == "all":
            for command in COMMANDS:
                print(f"== stiv-bench {command}", flush=True)
                timing.guard(strict)
                _entry(command)([])
            return
        timing.guard(strict)
        _entry(name)(rest)


if __name__ == "__main__":
    run()
