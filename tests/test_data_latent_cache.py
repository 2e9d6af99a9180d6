"""Latent cache: stiv-encode-shards output equals encoding the deterministic pixel batches."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import coded_shards, demo_dir, demo_shards

from stiv_jax.cli import encode_shards as encode_shards_cli
from stiv_jax.data import config as data_config
from stiv_jax.data import latent_cache, pipeline
from stiv_jax.vae.pixel import PixelAutoencoder

D = 8


def toy_text_encoder(ids: np.ndarray, mask: np.ndarray):
    """Deterministic stand-in for T5/CLIP: sinusoid features of the ids; pooled = last real token."""
    tokens = np.sin(ids[..., None] * (np.arange(D) + 1.0)) * mask[..., None]
    last = mask.sum(axis=1) - 1
    return tokens.astype(np.float32), tokens[np.arange(len(ids)), last].astype(np.float32)


def pixel_config(path, **overrides):
    cfg = data_config.get_data_config()
    cfg.path, cfg.tokenizer_path, cfg.max_text_length = path, f"{demo_dir()}/spm.model", 10
    cfg.num_frames, cfg.resolution, cfg.frame_strides, cfg.read_threads = 4, 16, (2, 1), 1
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def reference_elements(cfg):
    """Every record through the deterministic pixel pipeline (centred crops), by key."""
    cfg.random_crop = False
    out = {}
    for _, _, ds in pipeline.bucket_datasets(cfg, training=False):
        for element in ds:
            out[int(element["key"])] = element
    return out


@pytest.mark.parametrize("dtype,atol", [("float32", 0.0), ("float16", 1e-3)])
def test_latents_match_encoded_pixels(tmp_path, dtype, atol):
    buckets = ((4, 16, 16), (1, 16, 16))
    cfg = pixel_config(coded_shards(), buckets=buckets)
    ae = PixelAutoencoder(downsample=2)
    manifest = latent_cache.encode_shards(
        cfg, str(tmp_path), ae, toy_text_encoder, batch_size=2, dtype=dtype, log=lambda _: None
    )
    reference = reference_elements(pixel_config(coded_shards(), buckets=buckets))
    assert manifest["num_records"] == len(reference) == 6  # every record fits a bucket
    assert manifest["latent_shapes"] == {"4x8x8x12": 4, "1x8x8x12": 2}  # 4 videos, 2 images

    lcfg = data_config.get_data_config()
    lcfg.path, lcfg.mode, lcfg.num_epochs = str(tmp_path), "latents", 1
    seen = set()
    for batch in pipeline.make_iterator(lcfg, batch_size=1):
        assert set(batch) == {"latents", "text_emb", "pooled_text", "text_mask", "micro", "key", "skipped"}
        assert batch["latents"].dtype == np.float32 and batch["text_mask"].dtype == np.bool_
        source_key = _source_keys(tmp_path)[int(batch["key"][0])]
        ref = reference[source_key]
        expected = np.asarray(ae.encode(ref["video"][None]))
        np.testing.assert_allclose(batch["latents"], expected, atol=atol)
        tokens, pooled = toy_text_encoder(ref["text_ids"][None], ref["text_mask"][None])
        np.testing.assert_allclose(batch["text_emb"], tokens, atol=atol)
        np.testing.assert_allclose(batch["pooled_text"], pooled, atol=atol)
        np.testing.assert_array_equal(batch["micro"][0], ref["micro"])
        np.testing.assert_array_equal(batch["text_mask"][0], ref["text_mask"])
        seen.add(source_key)
    assert seen == set(reference)


def _source_keys(path) -> dict[int, int]:
    from stiv_jax.data import shards

    return {r["key"]: r["source_key"] for r in shards.read_records(str(path))}


def test_cli_without_text_encoder_keeps_token_ids(tmp_path, capsys):
    encode_shards_cli.run(
        [
            f"--input={demo_shards()}",
            f"--out={tmp_path}",
            "--autoencoder=pixel:4",
            f"--tokenizer_path={demo_dir()}/spm.model",
            "--max_text_length=10",
            "--buckets=4x16x16",
            "--frame_strides=1",
        ]
    )
    assert capsys.readouterr().out.strip().endswith("skipped=0 shapes={'4x4x4x48': 20}")
    cfg = data_config.get_data_config()
    cfg.path, cfg.mode = str(tmp_path), "latents"
    batch = next(pipeline.make_iterator(cfg, batch_size=4))
    assert {k: v.shape for k, v in batch.items()} == {
        "latents": (4, 4, 4, 4, 48),
        "text_ids": (4, 10),
        "text_mask": (4, 10),
        "micro": (4, 6),
        "key": (4,),
        "skipped": (4,),
    }
    assert np.all(batch["micro"][:, 4] == 1) and np.all(batch["micro"][:, 5] == 4)
    with pytest.raises(ValueError, match="data.mode='pixels'"):
        pipeline.make_dataset(pixel_config(str(tmp_path)))


def test_every_stride_caches_each_clip_at_each_stride(tmp_path):
    """``stiv-encode-shards --every_stride`` (the console script): one latent record per clip and
    stride, each equal to encoding that stride's pixel clip, its stride in ``micro``."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "stiv-encode-shards")
    args = [f"--input={demo_shards()}", "--autoencoder=pixel:4", f"--tokenizer_path={demo_dir()}/spm.model"]
    args += ["--max_text_length=10", "--buckets=4x16x16", "--frame_strides=1,3", "--dtype=float32"]
    proc = subprocess.run(
        [script, *args, f"--out={tmp_path}", "--every_stride"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "encoded=40 skipped=0 shapes={'4x4x4x48': 40}"
    from stiv_jax.data import shards

    records = list(shards.read_records(str(tmp_path)))
    by_stride = {s: {r["source_key"]: r for r in records if r["micro"][4] == s} for s in (1, 3)}
    assert sorted(len(v) for v in by_stride.values()) == [20, 20]
    ae = PixelAutoencoder(downsample=4)
    for stride, got in by_stride.items():
        reference = reference_elements(pixel_config(demo_shards(), buckets=((4, 16, 16),), frame_strides=(stride,)))
        assert set(got) == set(reference)
        for key, record in got.items():
            expected = np.asarray(ae.encode(reference[key]["video"][None]))[0]
            np.testing.assert_array_equal(np.asarray(record["latents"], np.float32), expected)


def test_encode_shards_script_uses_the_projects_own_clip_and_vae(tmp_path):
    """stiv-encode-shards --autoencoder=kl:DIR --text_encoder=clip:DIR (stiv-import directories)
    caches exactly what the trainer's encoders (stiv_jax.encoders.build) give for the same batch."""
    import os
    import subprocess
    import sys

    from stiv_jax.encoders.build import build_autoencoder, build_text_encoder, from_spec
    from stiv_jax.encoders.pretrained import Pretrained, random_init, save_pretrained
    from stiv_jax.text.clip import CLIPTextConfig
    from stiv_jax.vae.autoencoder_kl import AutoencoderKLConfig

    clip_cfg = CLIPTextConfig(
        vocab_size=512, width=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=10, eos_token_id=1, pooling="last"
    )
    vae_cfg = AutoencoderKLConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4)
    clip = save_pretrained(str(tmp_path / "clip"), Pretrained("clip", clip_cfg, random_init("clip", clip_cfg)))
    vae = save_pretrained(str(tmp_path / "vae"), Pretrained("vae", vae_cfg, random_init("vae", vae_cfg)))
    out = tmp_path / "latents"
    script = os.path.join(os.path.dirname(sys.executable), "stiv-encode-shards")
    proc = subprocess.run(
        [
            script,
            f"--input={coded_shards()}",
            f"--out={out}",
            f"--autoencoder=kl:{vae}",
            f"--text_encoder=clip:{clip}",
            f"--tokenizer_path={demo_dir()}/spm.model",
            "--max_text_length=10",
            "--buckets=4x16x16",
            "--frame_strides=2,1",
            "--dtype=float32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("skipped=0 shapes={'4x8x8x4': 4}")

    reference = reference_elements(pixel_config(coded_shards(), buckets=((4, 16, 16),)))
    ae = build_autoencoder(from_spec(f"kl:{vae}", what="autoencoder"))
    text = build_text_encoder(from_spec(f"clip:{clip}", what="text"))
    source = _source_keys(out)
    lcfg = data_config.get_data_config()
    lcfg.path, lcfg.mode, lcfg.num_epochs = str(out), "latents", 1
    for batch in pipeline.make_iterator(lcfg, batch_size=1):
        ref = reference[source[int(batch["key"][0])]]
        np.testing.assert_allclose(batch["latents"], np.asarray(ae.encode(ref["video"][None])), atol=1e-5)
        tokens, pooled = text.encode(ref["text_ids"][None], ref["text_mask"][None].astype(bool))
        np.testing.assert_allclose(batch["text_emb"], tokens, atol=1e-5)
        np.testing.assert_allclose(batch["pooled_text"], pooled, atol=1e-5)


def test_encoder_specs_are_checked():
    from stiv_jax.encoders.build import from_spec
    from stiv_jax.errors import ConfigError

    assert from_spec("pixel:2", what="autoencoder") == {"kind": "pixel", "downsample": 2}
    assert from_spec("none", what="text") == {"kind": "cached"}
    with pytest.raises(ConfigError, match="--autoencoder='my_encoders:make_ae'"):
        from_spec("my_encoders:make_ae", what="autoencoder")
    with pytest.raises(ConfigError, match="--text_encoder='clip'"):
        from_spec("clip", what="text")


def test_a_latent_cache_warns_about_strides_it_does_not_hold(tmp_path, caplog):
    """A run asking a latent cache for strides it was not encoded at is told so, naming data.path
    (latents are fixed at encode time: it would silently train on the cached stride only)."""
    settings = dict(frame_strides=[1, 3], every_stride=False)
    assert "--every_stride" in pipeline.latent_stride_mismatch((1, 3), settings)
    assert pipeline.latent_stride_mismatch((1, 3), settings | dict(every_stride=True)) is None
    assert pipeline.latent_stride_mismatch((1,), dict(frame_strides=[1])) is None
    assert "(2,) differs from" in pipeline.latent_stride_mismatch((2,), dict(frame_strides=[1]))
    assert pipeline.latent_stride_mismatch((2,), {}) is None  # caches written before the manifest said
    assert pipeline.latent_stride_mismatch((3,), settings) is None  # one of the cached strides
    assert "(every stride)" in pipeline.latent_stride_mismatch((1,), settings | dict(every_stride=True))

    cfg = pixel_config(coded_shards(), buckets=((4, 16, 16),), frame_strides=(1, 3))
    latent_cache.encode_shards(cfg, str(tmp_path), PixelAutoencoder(downsample=2), dtype="float32", log=lambda _: None)
    lcfg = data_config.get_data_config()
    lcfg.path, lcfg.mode, lcfg.tokenizer_path, lcfg.max_text_length = str(tmp_path), "latents", cfg.tokenizer_path, 10
    for strides, warned in (((1, 3), True), ((1,), False), ((2,), True)):
        lcfg.frame_strides = strides
        caplog.clear()
        with caplog.at_level("WARNING"):
            pipeline.bucket_datasets(lcfg, training=False)
        messages = [r.getMessage() for r in caplog.records if "latent cache" in r.getMessage()]
        assert len(messages) == warned, messages
        if warned:
            assert messages[0].startswith(f"data.path={tmp_path}: data.frame_strides={strides}")


def test_standardised_pixel_cache_and_a_run_that_disagrees_with_it(tmp_path):
    """``stiv-encode-shards --autoencoder=pixel:4:scale=S:shift=B`` (the console script) caches
    ``(raw − B)·S``; the manifest's ``latent_stats`` are the mean and std of every cached value, and
    standardising with them gives mean 0, std 1. ``stiv-train`` on that cache with a config whose
    pixel autoencoder is unscaled exits 2 with one line naming data.path and the cache's spec,
    before anything is written."""
    import json
    import os
    import subprocess
    import sys

    from stiv_jax.data import shards

    bin_dir = os.path.dirname(sys.executable)
    args = [f"--input={demo_shards()}", f"--tokenizer_path={demo_dir()}/spm.model", "--max_text_length=10"]
    args += ["--buckets=4x16x16", "--frame_strides=1", "--dtype=float32"]
    caches = {}
    for name, spec in (("raw", "pixel:4"), ("scaled", None)):
        if spec is None:  # standardise with the raw cache's own statistics
            stats = json.loads((tmp_path / "raw" / "manifest.json").read_text())["latent_stats"]
            spec = f"pixel:4:scale={1 / stats['std']!r}:shift={stats['mean']!r}"
        proc = subprocess.run(
            [f"{bin_dir}/stiv-encode-shards", *args, f"--autoencoder={spec}", f"--out={tmp_path / name}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        records = {
            r["source_key"]: np.asarray(r["latents"], np.float64) for r in shards.read_records(str(tmp_path / name))
        }
        values = np.concatenate([v.ravel() for v in records.values()])
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["settings"]["autoencoder"] == spec
        np.testing.assert_allclose(
            [manifest["latent_stats"]["mean"], manifest["latent_stats"]["std"]],
            [values.mean(), values.std()],
            rtol=1e-6,
        )
        caches[name] = records
    assert stats["std"] > 0.1 and abs(stats["mean"]) > 0.1  # the demo clips: dark, not unit-scale
    for key, raw in caches["raw"].items():
        np.testing.assert_allclose(caches["scaled"][key], (raw - stats["mean"]) / stats["std"], atol=1e-5)
    scaled = json.loads((tmp_path / "scaled" / "manifest.json").read_text())["latent_stats"]
    np.testing.assert_allclose([scaled["mean"], scaled["std"]], [0.0, 1.0], atol=1e-5)

    workdir = tmp_path / "run"
    proc = subprocess.run(
        [
            f"{bin_dir}/stiv-train",
            f"--config={os.path.dirname(__file__)}/../experiments/demo_shapes.py",
            f"--workdir={workdir}",
            f"--config.data.path={tmp_path / 'scaled'}",
            f"--config.data.tokenizer_path={demo_dir()}/spm.model",
            "--config.autoencoder.downsample=4",
            "--config.autoencoder.scaling_factor=1.0",
            "--config.autoencoder.shift_factor=0.0",
        ],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(
        f"stiv-train: error: data.path={tmp_path / 'scaled'}: the latent cache was written by --autoencoder={spec}"
    ), lines[0]
    assert not workdir.exists() or not any(workdir.iterdir())
