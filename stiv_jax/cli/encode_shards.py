"""stiv-encode-shards: clip shards -> latent-cache shards (autoencoder + text encoder run once).

  stiv-encode-shards --input=SHARDS --out=DIR --autoencoder=pixel[:factor]|kl:DIR \
      [--text_encoder=none|clip:DIR|t5:DIR] [--tokenizer=t5|clip] --tokenizer_path=spm.model \
      [--num_frames=16 --resolution=64 | --buckets=16x64x64,1x64x64] [--frame_strides=1,2,3]
      [--every_stride]

``--tokenizer=t5`` (default) reads the SentencePiece model at ``--tokenizer_path``;
``--tokenizer=clip`` (public CLIP text encoders) uses CLIP's BPE vocabulary (``--tokenizer_path``
optional: the packaged one). Uses centred crops and the first fitting stride of
``--frame_strides`` for each record (``--every_stride``: every fitting stride, one latent record
each, e.g. long video's keyframe and interpolation strides), and writes ``latents-*.array_record`` + ``index.npy`` +
``manifest.json`` for ``data.mode='latents'``. Records that cannot be read or decoded are left
out and counted (``skipped=N`` in the last line, ``num_skipped`` and the reasons in the manifest). Bad input: one ``stiv-encode-shards: error:``
line, exit status 2 (``--verbose`` for the traceback).
"""

from __future__ import annotations

from absl import flags

from stiv_jax.console import flag_utils
from stiv_jax.console.errors import reported
from stiv_jax.data import config as data_config
from stiv_jax.data import latent_cache
from stiv_jax.errors import ConfigError
from stiv_jax.text.tokenizer import check_pairing

PROG = "stiv-encode-shards"


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("input", None, "Clip shard folder (stiv-make-shards output).", **d)
    flags.DEFINE_string("out", None, "Output folder for the latent shards (local or gs://).", **d)
    flags.DEFINE_string("autoencoder", "pixel", "'pixel', 'pixel:F' or 'kl:DIR' (stiv-import --kind=vae).", **d)
    flags.DEFINE_string("text_encoder", "none", "'none' (store token ids), 'clip:DIR' or 't5:DIR' (stiv-import).", **d)
    flags.DEFINE_enum("tokenizer", "t5", ["t5", "clip"], "Caption tokenizer: T5 SentencePiece or CLIP BPE.", **d)
    flags.DEFINE_string(
        "tokenizer_path", None, "SentencePiece model (--tokenizer=t5), or a CLIP BPE vocabulary .gz (optional).", **d
    )
    flags.DEFINE_integer("max_text_length", 64, "Token length L.", **d)
    flags.DEFINE_integer("num_frames", 16, "Frames per clip (single-bucket mode).", **d)
    flags.DEFINE_integer("resolution", 64, "Square crop size (single-bucket mode).", **d)
    flags.DEFINE_list("buckets", [], "Shapes TxHxW, e.g. 16x64x64,1x64x64 (overrides the two above).", **d)
    flags.DEFINE_list("frame_strides", ["1", "2", "3"], "Candidate strides; the first fitting one is used.", **d)
    flags.DEFINE_bool("every_stride", False, "Encode each record at every fitting stride.", **d)
    flags.DEFINE_integer("batch_size", 8, "Clips per autoencoder call.", **d)
    flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Storage dtype of float arrays.", **d)
    flags.DEFINE_integer("num_workers", 0, "Grain worker processes for decoding.", **d)
    flags.DEFINE_integer("records_per_shard", 1000, "Records per ArrayRecord shard.", **d)
    flags.mark_flags_as_required(["input", "out"], flag_values=fv)
    return fv


def parse_buckets(items: list[str]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for item in items:
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"--buckets entry {item!r} is not TxHxW (e.g. 16x64x64)")
        out.append(tuple(int(p) for p in parts))
    return tuple(out)


def parse_strides(items: list[str]) -> tuple[int, ...]:
    if not items or not all(s.strip().isdigit() and int(s) > 0 for s in items):
        raise ConfigError(f"--frame_strides must be positive integers, got {','.join(items)!r}")
    return tuple(int(s) for s in items)


def run(argv: list[str] | None = None) -> None:
    fv = flag_utils.parse(_flag_values(), argv, PROG)
    with reported(PROG, fv.verbose):
        cfg = data_config.get_data_config()
        if fv.tokenizer == "t5" and not fv.tokenizer_path:
            raise ConfigError("--tokenizer=t5 needs --tokenizer_path (a SentencePiece model)")
        cfg.path, cfg.max_text_length = fv.input, fv.max_text_length
        cfg.tokenizer, cfg.tokenizer_path = fv.tokenizer, fv.tokenizer_path or ""
        cfg.num_frames, cfg.resolution, cfg.num_workers = fv.num_frames, fv.resolution, fv.num_workers
        cfg.buckets = parse_buckets(fv.buckets)
        cfg.frame_strides = parse_strides(fv.frame_strides)
        autoencoder, encode_text = latent_cache.encoders_from_specs(fv.autoencoder, fv.text_encoder)
        text = getattr(encode_text, "__self__", None)  # the TextEncoder whose ``encode`` this is
        check_pairing(
            fv.tokenizer,
            fv.max_text_length,
            getattr(text, "kind", "cached"),
            None if text is None else int(text.model.config.vocab_size),
            keys=("--tokenizer", "--text_encoder", "--max_text_length"),
        )
        manifest = latent_cache.encode_shards(
            cfg,
            fv.out,
            autoencoder,
            encode_text,
            batch_size=fv.batch_size,
            dtype=fv.dtype,
            records_per_shard=fv.records_per_shard,
            every_stride=fv.every_stride,
            settings={"autoencoder": fv.autoencoder, "text_encoder": fv.text_encoder, "tokenizer": fv.tokenizer},
        )
    print(f"encoded={manifest['num_records']} skipped={manifest['num_skipped']} shapes={manifest['latent_shapes']}")


if __name__ == "__main__":
    run()
