"""``stiv-aot --config=experiments/NAME.py --topology=v5e:16x16 [--config.KEY=VALUE ...]``.

Compiles the experiment's real train step for a TPU topology on this host (through libtpu, no
TPU needed) and prints per-device memory and FLOPs; the last line is
``per_device_total_bytes=<int> flops_per_step=<float> capacity_bytes=<int> fits=yes|no|unknown``.
A step over the chip's memory (``--capacity_gib``, default the generation's: v5e 15.75, v5p
95.74, v6e 31.25 GiB) ends with exit status 2 and one error line, even when XLA compiled it.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from stiv_jax.console import errors

PROG = "stiv-aot"
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:16x16", "TPU topology, e.g. v5e:16x16, v5e:2x2, v5p:4x4x8.")
_CAPACITY = flags.DEFINE_float("capacity_gib", None, "HBM per chip in GiB (default: the generation's).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of known errors and the libraries' INFO logs.")


def main(argv) -> None:
    del argv
    verbose = _VERBOSE.value or errors.verbose_from_env()
    errors.quiet_libraries(verbose)
    os.environ.pop("JAX_PLATFORMS", None)  # the TPU compiler plugin must be loadable
    with errors.reported(PROG, verbose):
        config = errors.config_value(_CONFIG)
        from stiv_jax.train.aot import DoesNotFit, compile_train_step, tpu_devices

        report = compile_train_step(config, tpu_devices(_TOPOLOGY.value), _TOPOLOGY.value)
        if _CAPACITY.value is not None:
            report.capacity_bytes = int(_CAPACITY.value * 2**30)
        print(report.render(), flush=True)
        if report.fits is False:
            raise DoesNotFit(
                f"{report.total_bytes / 2**30:.3f} GiB per chip exceeds the {report.capacity_bytes / 2**30:.2f} GiB "
                f"of {_TOPOLOGY.value} (XLA compiled it anyway): raise config.grad_accum_steps or use more chips"
            )


def run(argv=None) -> None:
    flags.mark_flags_as_required(["config"])
    app.run(main, argv=argv, flags_parser=errors.absl_flags_parser(PROG))


if __name__ == "__main__":
    run()
