"""stiv-export-torch: export a training run for PyTorch.

    stiv-export-torch --workdir=DIR [--out=stiv.safetensors] [--ema|--no-ema] [--dtype=bfloat16]
    stiv-export-torch --workdir=DIR --format=diffusers [--out=FOLDER] [--text_encoder=DIR]

Reads the latest (or ``--step``) orbax checkpoint of ``DIR`` (EMA params by default) and writes

- ``--format=safetensors`` (default): the DiT in the layout of stiv_jax/export/torch_stiv.py,
  ``stiv.safetensors`` plus the model config ``stiv.json`` beside it (default
  ``DIR/export/stiv.safetensors``); load with ``torch_stiv.load_torch_stiv(path)``;
- ``--format=diffusers``: a diffusers pipeline folder (default ``DIR/export/diffusers``) with the
  DiT, scheduler, text encoder, tokenizer and autoencoder; sample with
  ``STIVPipeline.from_pretrained(FOLDER)(prompt)`` (``from stiv_jax.export import STIVPipeline``).
  Runs trained on cached text embeddings name their text encoder with ``--text_encoder``.

``DIR`` and ``--out`` may be ``gs://`` URLs. Prints the output path.
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
    flags.DEFINE_enum(
        "format",
        "safetensors",
        ["safetensors", "diffusers"],
        "safetensors: the DiT alone; diffusers: a pipeline folder that samples videos (STIVPipeline).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "text_encoder",
        None,
        "diffusers format, runs on cached text embeddings: the stiv-import directory of their text encoder.",
        flag_values=fv,
    )
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

        if fv.format == "diffusers":
            from stiv_jax.export.diffusers_export import export_diffusers

            out = fv.out or Workdir(fv.workdir).export_path("diffusers")
            if out.endswith(".safetensors"):
                raise ValueError(f"--format=diffusers writes a folder; --out={out!r} names a .safetensors file")
            out = export_diffusers(
                fv.workdir, out, ema=fv.ema, step=fv.step, text_encoder=fv.text_encoder, dtype=fv.dtype
            )
            print(out)
            return out
        if fv.text_encoder:
            raise ValueError("--text_encoder is used by --format=diffusers only")
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
