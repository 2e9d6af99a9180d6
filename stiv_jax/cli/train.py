"""``stiv-train --config=experiments/NAME.py --workdir=DIR [--config.KEY=VALUE ...]``.

Trains (or resumes) the experiment in WORKDIR. Unknown ``--config.KEY`` overrides fail while the
flags are parsed, before anything is compiled.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/NAME.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, TensorBoard events.")


def main(argv) -> None:
    del argv
    from stiv_jax.train.loop import train  # heavy imports after flag parsing

    train(_CONFIG.value, _WORKDIR.value)


def run(argv=None) -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
