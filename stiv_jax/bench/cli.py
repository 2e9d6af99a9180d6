"""``stiv-bench NAME [flags]``: the benchmark scripts behind one command.

- ``sampler``: schedule accuracy on exact flows and the batched-CFG forward (bench/sampler.py);
- ``data``: Grain decoding throughput with 0 and 2 workers (bench/data_throughput.py).

The Latte train-step comparison, MFU and scaling benchmarks (``latte``, ``mfu``, ``scaling``)
are not part of this release yet; asking for them fails with a message saying so.
"""

from __future__ import annotations

import sys

PLANNED = ("latte", "mfu", "scaling")


def run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = ("sampler", "data", "all")
    if not argv or argv[0] not in names + PLANNED:
        sys.exit(f"usage: stiv-bench {{{'|'.join(names)}}} [flags]")
    name, rest = argv[0], argv[1:]
    if name in PLANNED:
        sys.exit(f"stiv-bench {name}: not implemented in this release (see README, Performance)")
    if name in ("sampler", "all"):
        from stiv_jax.bench import sampler

        sampler.main(rest)
    if name in ("data", "all"):
        from stiv_jax.bench import data_throughput

        data_throughput.run(rest)


if __name__ == "__main__":
    run()
