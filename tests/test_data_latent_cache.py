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
    encode_shards_cli.run([
        f"--input={demo_shards()}", f"--out={tmp_path}", "--autoencoder=pixel:4",
        f"--tokenizer_path={demo_dir()}/spm.model", "--max_text_length=10", "--buckets=4x16x16",
        "--frame_strides=1",
    ])
    assert capsys.readouterr().out.strip().endswith("skipped=0 shapes={'4x4x4x48': 20}")
    cfg = data_config.get_data_config()
    cfg.path, cfg.mode = str(tmp_path), "latents"
    batch = next(pipeline.make_iterator(cfg, batch_size=4))
    assert {k: v.shape for k, v in batch.items()} == {
        "latents": (4, 4, 4, 4, 48), "text_ids": (4, 10), "text_mask": (4, 10), "micro": (4, 6), "key": (4,),
        "skipped": (4,),
    }
    assert np.all(batch["micro"][:, 4] == 1) and np.all(batch["micro"][:, 5] == 4)
    with pytest.raises(ValueError, match="data.mode='pixels'"):
        pipeline.make_dataset(pixel_config(str(tmp_path)))


def test_resolvers(tmp_path, monkeypatch):
    assert latent_cache.resolve_autoencoder("pixel:2") == PixelAutoencoder(2)
    assert latent_cache.resolve_text_encoder("none") is None
    (tmp_path / "my_encoders.py").write_text(
        "from stiv_jax.vae.pixel import PixelAutoencoder\n"
        "def make_ae():\n    return PixelAutoencoder(4)\n"
        "def encode_text(ids, mask):\n    return ids, mask\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert latent_cache.resolve_autoencoder("my_encoders:make_ae") == PixelAutoencoder(4)
    assert latent_cache.resolve_text_encoder("my_encoders:encode_text").__name__ == "encode_text"
    with pytest.raises(ValueError, match="package.module:attribute"):
        latent_cache.resolve_text_encoder("nocolon")
