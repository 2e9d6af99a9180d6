"""What ``make demo`` and ``make demo-apps`` share: the demo's prompts, how a demo config is read
for an output folder, and the latent cache of the demo shards for a config."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

T2V_PROMPTS = (
    "a red circle moving right",
    "a blue square moving up",
    "a yellow triangle moving left",
    "a green square moving down",
)
TI2V = ("green", "circle", "right")  # the first frame is rendered; the prompt asks for this motion
VIEW_SCALE = 4  # written videos are upscaled (nearest neighbour) by this factor


def load_config(path: str, out: str, steps: int | None):
    """The ``get_config()`` of the demo config file ``path``, reading the demo data in ``out``."""
    spec = importlib.util.spec_from_file_location("demo_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.path = os.path.join(out, "latents")
    config.data.tokenizer_path = os.path.join(out, "data", "spm.model")
    if steps is not None:
        config.num_train_steps = steps
    return config


def encode_latents(shards: str, latents: str, config, every_stride: bool = False) -> None:
    """The latent cache of ``shards`` for ``config`` (its clip length, stride(s), size and pixel
    autoencoder) in ``latents``, unless it is there; ``every_stride``: each clip at each stride."""
    from stiv_jax.data import config as data_config
    from stiv_jax.data import latent_cache
    from stiv_jax.encoders.build import build_autoencoder

    ae = build_autoencoder(config.autoencoder)
    manifest_path = os.path.join(latents, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            cached = json.load(f).get("settings", {}).get("autoencoder")
        if cached == ae.spec:
            return
        print(f"re-encoding {latents}: it holds {cached} latents, the config asks for {ae.spec}")
        shutil.rmtree(latents)
    cfg, d = data_config.get_data_config(), config.data
    cfg.path, cfg.tokenizer_path, cfg.max_text_length = shards, d.tokenizer_path, d.max_text_length
    cfg.num_frames, cfg.resolution, cfg.frame_strides = d.num_frames, d.resolution, tuple(d.frame_strides)
    manifest = latent_cache.encode_shards(
        cfg,
        latents,
        ae,
        dtype="float32",
        every_stride=every_stride,
        settings={"autoencoder": ae.spec, "text_encoder": "none"},
    )
    print(f"encoded={manifest['num_records']} skipped={manifest['num_skipped']} shapes={manifest['latent_shapes']}")
