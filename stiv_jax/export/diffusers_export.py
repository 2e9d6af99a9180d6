"""A training run → a diffusers pipeline folder (``stiv-export-torch --format=diffusers``), and back.

The folder (``STIVPipeline.from_pretrained(DIR)``)::

    model_index.json      components + ``stiv``: the run's sampling defaults
    transformer/          STIVTransformer3DModel (config.json: the model config; safetensors)
    scheduler/            STIVFlowMatchScheduler (the run's schedule, steps, solver)
    text_encoder/         transformers CLIPTextModel[WithProjection] / T5EncoderModel, or the
                          toy runs' STIVTokenEmbedding
    tokenizer/            STIVTokenizer (the run's SentencePiece model or CLIP BPE vocabulary)
    vae/                  diffusers AutoencoderKL, or the toy runs' STIVPixelAutoencoder
    stiv_run.json         the run's config.json, step and weights kind (for ``stiv-import``)

:func:`import_folder` turns such a folder into a run directory (config.json + an orbax checkpoint +
the encoders as ``stiv-import`` directories) that ``stiv-sample`` and ``config.init_from`` read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
import torch

from stiv_jax.encoders.build import build_autoencoder, build_text_encoder, resolve_text_config
from stiv_jax.export import convert
from stiv_jax.export.diffusers_parts import (
    STIVFlowMatchScheduler,
    STIVPixelAutoencoder,
    STIVTokenEmbedding,
    STIVTransformer3DModel,
)
from stiv_jax.export.diffusers_pipeline import STIVPipeline
from stiv_jax.export.diffusers_tokenizer import VOCAB_FILES, STIVTokenizer
from stiv_jax.flow.task_table import DEFAULT_PREDICT_FRAMES
from stiv_jax.model.config import resolve as resolve_model
from stiv_jax.sampling.options import SampleOptions
from stiv_jax.sampling.pipeline import default_geometry
from stiv_jax.storage import paths
from stiv_jax.storage.workdir import Workdir
from stiv_jax.text.clip import CLIPTextModel
from stiv_jax.text.clip_tokenizer import DEFAULT_VOCAB
from stiv_jax.text.embedding import FrozenTokenEmbedding
from stiv_jax.weights.torch_state import ConversionError

RUN_FILE = "stiv_run.json"


def _tensors(state: dict[str, np.ndarray], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def text_encoder_for(config: ml_collections.ConfigDict) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's frozen text encoder as a torch module, and how the pipeline pools it."""
    encoder = build_text_encoder(config.text, resolve_model(config.model).text_dim)
    if encoder is None:
        raise ConversionError("config.text.kind='cached' has no text encoder: pass --text_encoder=DIR")
    if isinstance(encoder, FrozenTokenEmbedding):
        module = STIVTokenEmbedding(*encoder.table.shape)
        module.load_state_dict({"table": torch.from_numpy(np.array(encoder.table[...]))}, strict=True)
        return module, {"text_pooling": "mean"}
    import transformers

    from stiv_jax.text.convert import clip_to_hf, t5_to_hf

    if isinstance(encoder.model, CLIPTextModel):
        hf_config, state = clip_to_hf(encoder.model)
        cls = (
            transformers.CLIPTextModelWithProjection
            if encoder.model.config.projection_dim
            else transformers.CLIPTextModel
        )
        module = cls(transformers.CLIPTextConfig(**hf_config))
        pooling = {"text_pooling": encoder.model.config.pooling, "text_eos_id": encoder.model.config.eos_token_id}
        pooling["text_projection"] = bool(encoder.use_projection)
    else:
        hf_config, state = t5_to_hf(encoder.model)
        module = transformers.T5EncoderModel(transformers.T5Config(**hf_config))
        pooling = {"text_pooling": "mean"}
    module.load_state_dict(_tensors(state), strict=True)
    return module.eval(), pooling


def autoencoder_for(config: ml_collections.ConfigDict) -> torch.nn.Module:
    """The run's frame autoencoder as a torch module (diffusers ``AutoencoderKL`` for ``kl``)."""
    ae = build_autoencoder(config.autoencoder)
    if config.autoencoder.kind == "pixel":
        return STIVPixelAutoencoder(ae.downsample, scaling_factor=ae.scaling_factor, shift_factor=ae.shift_factor)
    import diffusers

    from stiv_jax.vae.convert import vae_to_diffusers

    hf_config, state = vae_to_diffusers(ae.model)
    module = diffusers.AutoencoderKL(**hf_config)
    module.load_state_dict(_tensors(state), strict=True)
    return module.eval()


def sampling_defaults(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What ``STIVPipeline`` takes from the run when an argument is unset (``stiv-sample``'s defaults)."""
    options = SampleOptions.for_run(config)
    frames, height, width = default_geometry(config, "t2v")
    return dict(
        num_frames=frames,
        height=height,
        width=width,
        frame_stride=int(tuple(config.data.frame_strides)[0]),
        predict_frames=int(config.get("predict_frames", DEFAULT_PREDICT_FRAMES)),
        steps=options.steps,
        guidance=options.guidance,
        scale=options.scale,
        image_scale=options.image_scale,
        renorm=options.renorm,
        high_scale=options.high_scale,
        split_sigma=options.split_sigma,
        solver=options.solver,
        null_image=str(config.get("null_image", "noise")),
    )


def build_pipeline(
    workdir: str, scratch: str, *, ema: bool = True, step: int | None = None, text_encoder: str | None = None
) -> tuple[STIVPipeline, dict[str, Any]]:
    """``(STIVPipeline, run record)`` of a run's checkpoint (EMA by default); ``scratch``: a local
    directory that must outlive the pipeline (the tokenizer's vocabulary is copied there)."""
    wd = Workdir(workdir)
    config = resolve_text_config(wd.load_config(), text_encoder)
    model_cfg, params, step = convert.load_run(wd, ema=ema, step=step)
    transformer = STIVTransformer3DModel(convert.config_to_dict(model_cfg))
    transformer.load_state_dict(_tensors(convert.flax_to_torch(params, model_cfg), "stiv."), strict=True)
    options = SampleOptions.for_run(config)
    scheduler = STIVFlowMatchScheduler(options.schedule, options.steps, options.emulated_steps, options.solver)
    text_module, pooling = text_encoder_for(config)
    kind = config.data.get("tokenizer", "t5")
    vocab = config.data.get("tokenizer_path", "") or (DEFAULT_VOCAB if kind == "clip" else "")
    if not vocab or not paths.exists(vocab):
        raise FileNotFoundError(f"tokenizer {vocab!r} (data.tokenizer_path) not found")
    local = os.path.join(scratch, VOCAB_FILES[kind])
    with open(local, "wb") as f:
        f.write(paths.read_bytes(vocab))
    tokenizer = STIVTokenizer(local, kind, int(config.data.max_text_length))
    defaults = sampling_defaults(config) | pooling
    pipe = STIVPipeline(transformer.eval(), scheduler, text_module, tokenizer, autoencoder_for(config), stiv=defaults)
    record = {"config": json.loads(config.to_json()), "step": step, "params": "ema_params" if ema else "params"}
    return pipe, record


def export_diffusers(
    workdir: str,
    out: str,
    *,
    ema: bool = True,
    step: int | None = None,
    text_encoder: str | None = None,
    dtype: str | None = None,
) -> str:
    """Writes the pipeline folder ``out`` (local or ``gs://``); returns it."""
    with tempfile.TemporaryDirectory() as tmp:
        pipe, record = build_pipeline(workdir, tmp, ema=ema, step=step, text_encoder=text_encoder)
        if dtype == "bfloat16":
            pipe.transformer.to(torch.bfloat16)
        local = out if not paths.is_remote(out) else os.path.join(tmp, "pipeline")
        pipe.save_pretrained(local, safe_serialization=True)
        with open(os.path.join(local, RUN_FILE), "w") as f:
            json.dump(record | {"workdir": os.fspath(workdir)}, f, indent=2, sort_keys=True)
        if paths.is_remote(out):
            for root, _, files in os.walk(local):
                for name in files:
                    rel = os.path.relpath(os.path.join(root, name), local)
                    paths.upload(os.path.join(root, name), paths.join(out, *rel.split(os.sep)))
    return out


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (not a folder written by stiv-export-torch --format=diffusers)")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path}: not JSON ({e})") from e


def import_folder(folder: str, out: str) -> tuple[str, int]:
    """A pipeline folder → run directory ``out``: config.json, a checkpoint holding the weights as
    both ``params`` and ``ema_params`` (bit-exact), the text encoder / autoencoder as
    ``stiv-import`` directories under ``out/encoders/`` and the tokenizer under ``out/tokenizer/``.
    Returns ``(out, step)``."""
    from safetensors.numpy import load_file

    from stiv_jax.encoders.pretrained import import_weights, save_pretrained
    from stiv_jax.storage.checkpoints import Checkpointer

    record = _read_json(os.path.join(folder, RUN_FILE))
    config = ml_collections.ConfigDict(record["config"])
    model_cfg = convert.model_config(_read_json(os.path.join(folder, "transformer", "config.json"))["stiv_config"])
    weights = os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors")
    state = {k.removeprefix("stiv."): v for k, v in convert.load_safetensors(weights).items()}
    try:
        params = convert.torch_to_flax(state, model_cfg)
    except ConversionError as e:
        raise ConversionError(f"{weights}: {e}") from None
    config.model = model_cfg
    out = os.fspath(paths.as_path(out))
    text_dir = os.path.join(folder, "text_encoder")
    if config.text.kind in ("clip", "t5"):
        pretrained = import_weights(config.text.kind, text_dir, os.path.join(text_dir, "config.json"))
        config.text.checkpoint = save_pretrained(os.path.join(out, "encoders", "text"), pretrained, source=text_dir)
    else:  # the toy runs' table is rebuilt from its seed: it must be the folder's
        table = load_file(os.path.join(text_dir, "diffusion_pytorch_model.safetensors"))["table"]
        rebuilt = build_text_encoder(config.text, int(model_cfg.text_dim)).table[...]
        if not np.array_equal(table, np.asarray(rebuilt)):
            raise ConversionError(f"{text_dir}: the token table differs from config.text.seed's (changed in PyTorch?)")
    if config.autoencoder.kind == "kl":
        vae_dir = os.path.join(folder, "vae")
        pretrained = import_weights("vae", vae_dir, os.path.join(vae_dir, "config.json"))
        config.autoencoder.checkpoint = save_pretrained(
            os.path.join(out, "encoders", "vae"), pretrained, source=vae_dir
        )
    tokenizer = STIVTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    target = os.path.join(out, "tokenizer", os.path.basename(tokenizer.vocab_file))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(tokenizer.vocab_file, target)
    config.data.tokenizer, config.data.tokenizer_path = tokenizer.kind, target
    workdir = Workdir(out)
    workdir.save_config(config)
    step = int(record.get("step", 0))
    params = jax.tree.map(np.asarray, params)
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(step, {"params": params, "ema_params": params, "step": np.asarray(step, np.int32)})
    checkpointer.close()
    return out, step
