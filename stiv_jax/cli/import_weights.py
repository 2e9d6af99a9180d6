"""stiv-import: convert PyTorch weights for stiv_jax — a text encoder or VAE into a pretrained
directory, or an exported STIV pipeline folder back into a run directory.

    stiv-import --kind=clip --weights=text_encoder_2/model.safetensors \\
        --config=text_encoder_2/config.json --out=weights/clip-bigG
    stiv-import --kind=t5 --weights=t5-v1_1-xxl/ --config=t5-v1_1-xxl --out=weights/t5-xxl
    stiv-import --kind=vae --weights=sd-vae-ft-ema/diffusion_pytorch_model.bin \\
        --config=sd-vae-ft-ema --out=weights/sd-vae-ft-ema

    stiv-import --kind=stiv --weights=stiv-diffusers/ --out=runs/imported

``--kind=stiv``: ``--weights`` is a folder written by ``stiv-export-torch --format=diffusers`` (maybe
fine-tuned in PyTorch since); ``--out`` becomes a run directory (config.json, a checkpoint with
the weights as params and EMA, the encoders and tokenizer) that ``stiv-sample --workdir`` and
``config.init_from`` read; no ``--config``.

Otherwise ``--weights`` is a .safetensors/.bin/.pt file or a directory of shards; ``--config`` a preset name,
our JSON, or the Hugging Face / diffusers config.json next to the weights. The output directory
(``config.json`` + orbax ``params/``) is what ``text_encoder.checkpoint`` / ``vae.checkpoint`` in a
training or sampling config point at (stiv_jax.encoders.pretrained.load_pretrained).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported

PROG = "stiv-import"


def _flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_enum(
        "kind", None, ["clip", "t5", "vae", "stiv"], "What the weights are (stiv: a pipeline folder).", flag_values=fv
    )
    flags.DEFINE_string("weights", None, "Weight file (.safetensors/.bin/.pt) or a directory of them.", flag_values=fv)
    flags.DEFINE_string("config", None, "Preset name, our JSON, or the HF/diffusers config.json.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory (config.json + orbax params/).", flag_values=fv)
    flags.DEFINE_enum("param_dtype", "float32", ["float32", "bfloat16"], "Stored parameter dtype.", flag_values=fv)
    for name in ("kind", "weights", "out"):
        flags.mark_flag_as_required(name, flag_values=fv)
    return fv


def run(argv: Sequence[str] | None = None) -> str:
    """Parses ``argv`` (defaults to ``sys.argv[1:]``), converts, saves; returns the output directory.

    Known errors (missing or damaged weight files, a config that does not fit them) end the
    process with one ``stiv-import: error:`` line and exit status 2.
    """
    fv = flag_utils.parse(_flags(), sys.argv[1:] if argv is None else argv, PROG, __doc__)
    with reported(PROG, fv.verbose):
        if fv.kind == "stiv":
            from stiv_jax.export.diffusers_export import import_folder

            if fv.config:
                raise ValueError("--kind=stiv reads the folder's own configs; drop --config")
            out, step = import_folder(fv.weights, fv.out)
            print(f"{PROG}: kind=stiv step={step} out={out}")
            return out
        if not fv.config:
            raise ValueError(f"--config is required for --kind={fv.kind} (a preset, our JSON or the HF config.json)")
        from stiv_jax.encoders.pretrained import Pretrained, import_weights, num_params, save_pretrained

        pretrained = import_weights(fv.kind, fv.weights, fv.config)
        if fv.param_dtype != "float32":
            import jax
            from flax import nnx

            cfg = pretrained.config.replace(param_dtype=fv.param_dtype)
            graphdef, state = nnx.split(pretrained.model)
            state = jax.tree.map(lambda x: x.astype(fv.param_dtype), state)
            pretrained = Pretrained(pretrained.kind, cfg, nnx.merge(graphdef, state))
        out = save_pretrained(fv.out, pretrained, source=fv.weights)
    print(f"{PROG}: kind={pretrained.kind} params={num_params(pretrained.model)} out={out}")
    return out


def main() -> None:
    """Console entry point: exit status 0 on success (``run`` returns the directory, for Python)."""
    run()


if __name__ == "__main__":
    main()
