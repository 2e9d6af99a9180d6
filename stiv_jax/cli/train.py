"""``stiv-train --config=experiments/NAME.py --workdir=DIR [--config.KEY=VALUE ...]``.

Trains (or resumes) the experiment in WORKDIR (a local folder or a ``gs://`` URL). Unknown
``--config.KEY`` overrides fail while the flags are parsed, before anything is compiled. Expected
errors (a bad setting, an unmounted data bucket, a NaN loss) end with one ``stiv-train: error:``
line and exit status 1; ``--verbose`` shows the traceback.

Several processes (one per host, or N on one machine)::

    stiv-train ... --config.distributed=True [--config.distributed_coordinator=HOST:PORT \\
        --config.distributed_num_processes=N --config.distributed_process_id=I]
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/NAME.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://): checkpoints, logs, TensorBoard events.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of expected errors too.")


def main(argv) -> None:
    del argv
    from stiv_jax.train.loop import NonFiniteLossError, train  # heavy imports after flag parsing

    try:
        train(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
        if _VERBOSE.value:
            raise
        sys.exit(f"stiv-train: error: {e}")


def run(argv=None) -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
