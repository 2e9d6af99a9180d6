"""``stiv-train --config=experiments/NAME.py --workdir=DIR [--config.KEY=VALUE ...]``.

Trains (or resumes) the experiment in WORKDIR (a local folder or a ``gs://`` URL). Unknown
``--config.KEY`` overrides fail while the flags are parsed, before anything is compiled. Known
errors (a bad flag or setting, an unmounted data bucket, a NaN loss, a workdir in use) end with
one ``stiv-train: error:`` line and exit status 2; ``--verbose`` shows the traceback and the
libraries' INFO logs.

Several processes (one per host, or N on one machine)::

    stiv-train ... --config.distributed=True [--config.distributed_coordinator=HOST:PORT \\
        --config.distributed_num_processes=N --config.distributed_process_id=I]
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from stiv_jax.console import errors

PROG = "stiv-train"
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/NAME.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (local or gs://): checkpoints, logs, TensorBoard events."
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of known errors and the libraries' INFO logs.")


def main(argv) -> None:
    del argv
    verbose = _VERBOSE.value or errors.verbose_from_env()
    errors.quiet_libraries(verbose)
    with errors.reported(PROG, verbose):
        config = errors.config_value(_CONFIG)
        from stiv_jax.train.loop import train  # heavy imports after flag parsing

        train(config, _WORKDIR.value)


def run(argv=None) -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, argv=argv, flags_parser=errors.absl_flags_parser(PROG))


if __name__ == "__main__":
    run()
