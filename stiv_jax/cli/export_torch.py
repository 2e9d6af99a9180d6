"""stiv-export-torch: export a training run's weights for the PyTorch port of STIV.

    stiv-export-torch --workdir=DIR [--out=stiv.safetensors] [--ema|--no-ema] [--dtype=bfloat16]

Reads the latest orbax checkpoint of ``DIR`` (EMA params by default), converts them to the layout
of stiv_jax/export/torch_stiv.py and writes ``stiv.safetensors`` plus the model config
``stiv.json`` beside it (default ``DIR/export/stiv.safetensors``; ``DIR`` and ``--out`` may be
``gs://`` URLs); prints the output path. Load in PyTorch with
``stiv_jax.export.torch_stiv.load_torch_stiv("stiv.safetensors")``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported

PROG = "stiv-export-torch"


def _flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).", flag_values=fv)
    flags.DEFINE_string(
        "out",
        None,
        "Output FILE.safetensors (default WORKDIR/export/stiv.safetensors); the config goes to FILE.json.",
        flag_values=fv,
    )
    flags.DEFINE_bool("ema", True, "Export the EMA params (default) or, with --noema, the raw params.", flag_values=fv)
    flags.DEFINE_enum(
        "dtype", None, ["float32", "bfloat16"], "Stored dtype (default: as in the checkpoint).", flag_values=fv
    )
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def run(argv: Sequence[str] | None = None) -> str:
    """Parses ``argv`` (default ``sys.argv[1:]``), exports, prints and returns the output path.

    Known errors (no checkpoint, a bad ``--out``, params that do not fit the config) end the
    process with one ``stiv-export-torch: error:`` line and exit status 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    args = ["--noema" if a == "--no-ema" else a for a in args]  # absl spells it --noema
    fv = flag_utils.parse(_flags(), args, PROG, __doc__)
    with reported(PROG, fv.verbose):
        from stiv_jax.export import convert
        from stiv_jax.storage.workdir import Workdir

        out = fv.out or Workdir(fv.workdir).export_path()
        if not out.endswith(".safetensors"):
            raise ValueError(f"--out must end with .safetensors, got {out!r}")
        cfg, params, step = convert.load_run(fv.workdir, ema=fv.ema, step=fv.step)
        meta = {"step": str(step), "params": "ema_params" if fv.ema else "params", "workdir": fv.workdir}
        out, _ = convert.export(params, cfg, out, dtype=fv.dtype, metadata=meta)
    print(out)
    return out


def main() -> None:
    """Console entry point: exit status 0 on success (``run`` returns the path, for Python)."""
    run()


if __name__ == "__main__":
    main()
