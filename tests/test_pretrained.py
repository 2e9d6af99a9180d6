"""stiv-import → pretrained directory → load_pretrained / build_text_encoder / build_autoencoder,
checked against the torch reference models; preset sizes against transformers / diffusers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install stiv_jax[torch]")
transformers = pytest.importorskip("transformers", reason="needs the torch extra")
diffusers = pytest.importorskip("diffusers", reason="needs the torch extra")

from stiv_jax.cli import import_weights  # noqa: E402
from stiv_jax.encoders.build import build_text_encoder, load_autoencoder, load_text_encoder  # noqa: E402
from stiv_jax.encoders.pretrained import abstract_model, load_pretrained, num_params  # noqa: E402
from stiv_jax.text.clip import CLIPTextConfig  # noqa: E402
from stiv_jax.text.t5 import T5EncoderConfig  # noqa: E402
from stiv_jax.vae import AutoencoderKLConfig  # noqa: E402

RTOL = 1e-4


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


IDS = np.array([[5, 9, 14, 3, 7, 1, 0, 0], [4, 8, 12, 6, 11, 13, 10, 1]])
MASK = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8])


def test_import_clip_safetensors_with_hf_config(tmp_path):
    cfg = transformers.CLIPTextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=8,
        projection_dim=16,
        hidden_act="gelu",
        eos_token_id=1,
        bos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    hf = transformers.CLIPTextModelWithProjection(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")  # model.safetensors + config.json (architectures set)
    out = import_weights.run(
        [
            "--kind=clip",
            f"--weights={tmp_path / 'hf' / 'model.safetensors'}",
            f"--config={tmp_path / 'hf' / 'config.json'}",
            f"--out={tmp_path / 'clip'}",
        ]
    )
    meta = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert meta["kind"] == "clip" and meta["config"]["projection_dim"] == 16 and meta["config"]["pooling"] == "eos"
    enc = load_text_encoder(ml_collections.ConfigDict({"kind": "clip", "checkpoint": out, "use_projection": True}))
    tokens, pooled = enc.encode(IDS, MASK.astype(bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK))
    valid = MASK.astype(bool)
    assert max_rel_err(np.asarray(tokens)[valid], ref.last_hidden_state.numpy()[valid]) <= RTOL
    assert np.all(np.asarray(tokens)[~valid] == 0)
    assert max_rel_err(pooled, ref.text_embeds.numpy()) <= RTOL


def test_import_t5_torch_bin_then_load_on_mesh(tmp_path):
    hf_cfg = transformers.T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
    )
    torch.manual_seed(0)
    hf = transformers.T5EncoderModel(hf_cfg).eval()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ours = T5EncoderConfig.from_hf(hf_cfg.to_dict())
    (tmp_path / "t5.json").write_text(json.dumps(ours.to_dict()))  # our own JSON form
    out = import_weights.run(
        [
            "--kind=t5",
            f"--weights={tmp_path / 'pytorch_model.bin'}",
            f"--config={tmp_path / 't5.json'}",
            f"--out={tmp_path / 't5'}",
        ]
    )
    enc = build_text_encoder({"checkpoint": out})
    tokens, pooled = jax.jit(lambda e, i, m: e.encode(i, m))(enc, IDS, MASK.astype(bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.numpy()
    valid = MASK.astype(bool)
    assert max_rel_err(np.asarray(tokens)[valid], ref[valid]) <= RTOL
    mean = (ref * MASK[..., None]).sum(1) / MASK.sum(1, keepdims=True)
    assert max_rel_err(pooled, mean) <= RTOL
    _, pooled16 = build_text_encoder({"checkpoint": out, "dtype": "bfloat16"}).encode(IDS, MASK.astype(bool))
    assert pooled16.dtype == np.float32 and 0 < max_rel_err(pooled16, mean) < 3e-2  # bf16 compute, f32 out

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    loaded = load_pretrained(out, expect_kind="t5", mesh=mesh, param_dtype="bfloat16")
    wi = loaded.model.layers.wi_0.kernel
    assert wi.dtype == jax.numpy.bfloat16 and wi.shape == (2, 32, 48)
    assert wi[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    with pytest.raises(ValueError, match="holds a 't5' model, but a 'vae' model was asked for"):
        load_pretrained(out, expect_kind="vae")
    with pytest.raises(ValueError, match="holds a 't5' model, not a clip encoder"):
        build_text_encoder({"kind": "clip", "checkpoint": out})
    with pytest.raises(ValueError, match="needs `checkpoint`"):
        load_text_encoder({"kind": "t5"})


def test_import_vae_and_encode_frames(tmp_path):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    vae.save_pretrained(tmp_path / "hf")
    weights = next((tmp_path / "hf").glob("*.safetensors"))
    out = import_weights.run(
        [
            "--kind=vae",
            f"--weights={weights}",
            f"--config={tmp_path / 'hf' / 'config.json'}",
            f"--out={tmp_path / 'vae'}",
        ]
    )
    ae = load_autoencoder(ml_collections.ConfigDict({"checkpoint": out, "chunk_size": 2}))
    assert (ae.downsample, ae.latent_channels, ae.chunk_size) == (2, 4, 2)
    video = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(video[0].transpose(0, 3, 1, 2).copy())).latent_dist.mean.numpy()
    ref = (mean.transpose(0, 2, 3, 1) * 0.18215)[None]
    assert max_rel_err(ae.encode(video), ref) <= RTOL
    # a pytree: the trainer passes it into its own jitted step as an argument (no baked constants)
    inside = jax.jit(lambda ae, v: ae.decode(ae.encode(v)))(ae, video)
    np.testing.assert_allclose(inside, ae.decode(ae.encode(video)), rtol=1e-5, atol=1e-5)


def test_import_reports_bad_weights(tmp_path, capsys):
    hf_cfg = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4)
    sd = transformers.T5EncoderModel(hf_cfg).state_dict()
    del sd["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    torch.save(sd, tmp_path / "w.pt")
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg.to_dict()))
    with pytest.raises(SystemExit) as e:
        import_weights.run(
            [
                "--kind=t5",
                f"--weights={tmp_path / 'w.pt'}",
                f"--config={tmp_path / 'config.json'}",
                f"--out={tmp_path / 'o'}",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("stiv-import: error: ") and len(err.splitlines()) == 1, err
    assert "missing keys (1): encoder.block.1.layer.1.DenseReluDense.wo.weight" in err
    with pytest.raises(SystemExit) as e:
        import_weights.run(
            ["--kind=vae", f"--weights={tmp_path / 'w.pt'}", "--config=not-a-preset", f"--out={tmp_path / 'o'}"]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("stiv-import: error: ") and "not-a-preset" in err


STIV_IMPORT = os.path.join(os.path.dirname(sys.executable), "stiv-import")


@pytest.mark.parametrize("damage", ["text.safetensors", "truncated.safetensors", "text.bin"])
def test_import_names_a_weight_file_that_is_not_one(tmp_path, damage):
    """A renamed text file or a cut-short download: one line naming the file, exit 2 (it was a
    safetensors/pickle traceback); --verbose shows the traceback."""
    from safetensors.torch import save_file

    weights = tmp_path / "weights"
    weights.mkdir()  # a directory of shards: a good one first, then the bad one
    suffix = os.path.splitext(damage)[1]
    good = {"shared.weight": torch.ones(64, 32)}
    save_file(good, weights / "a.safetensors") if suffix == ".safetensors" else torch.save(good, weights / "a.bin")
    bad = weights / f"b{suffix}"
    if damage.startswith("text"):
        bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 42\n")
    else:
        data = (weights / "a.safetensors").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    args = [STIV_IMPORT, "--kind=t5", f"--weights={weights}", "--config=t5-v1_1-base", f"--out={tmp_path / 'out'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    what = (
        "not a PyTorch checkpoint"
        if damage.endswith(".bin")
        else "not a valid safetensors file (Error while deserializing header: "
    )
    assert proc.returncode == 2 and not proc.stdout, proc.stderr
    assert proc.stderr.startswith(f"stiv-import: error: {bad}: {what}") and len(proc.stderr.splitlines()) == 1, (
        proc.stderr
    )
    assert not (tmp_path / "out").exists()
    verbose = subprocess.run([*args, "--verbose"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and f"{bad}: {what}" in verbose.stderr


def test_load_state_dict_formats_and_half_precision(tmp_path):
    from safetensors.torch import save_file

    from stiv_jax.weights.torch_state import ConversionError, load_state_dict

    torch.manual_seed(0)
    sd = {
        "a.weight": torch.randn(3, 4, dtype=torch.bfloat16),
        "b.bias": torch.randn(5, dtype=torch.float16),
        "steps": torch.tensor([7]),
    }
    save_file({"a.weight": sd["a.weight"]}, tmp_path / "part-1.safetensors")
    save_file({"b.bias": sd["b.bias"], "steps": sd["steps"]}, tmp_path / "part-2.safetensors")
    torch.save({"state_dict": sd}, tmp_path / "lightning.ckpt")
    for loaded in (load_state_dict(str(tmp_path)), load_state_dict(str(tmp_path / "lightning.ckpt"))):
        assert loaded["a.weight"].dtype == np.float32 and loaded["b.bias"].dtype == np.float32
        np.testing.assert_array_equal(loaded["a.weight"], sd["a.weight"].float().numpy())
        np.testing.assert_array_equal(loaded["b.bias"], sd["b.bias"].float().numpy())
        assert loaded["steps"].tolist() == [7]
    with pytest.raises(ConversionError, match=r"weights\.npz: unsupported weight file"):
        (tmp_path / "weights.npz").write_bytes(b"")
        load_state_dict(str(tmp_path / "weights.npz"))


@pytest.mark.parametrize("cls", [CLIPTextConfig, T5EncoderConfig, AutoencoderKLConfig])
def test_config_round_trips_and_errors(cls, tmp_path):
    for name in cls.PRESETS:
        cfg = cls.resolve(name).replace(dtype="bfloat16")
        assert cls.resolve(cfg.to_dict()) == cfg
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg.to_dict()))
        assert cls.resolve(str(tmp_path / f"{name}.json")) == cfg
    with pytest.raises(ValueError, match=r"unknown .* fields: \['widht'\]"):
        cls.resolve({"widht": 3})
    with pytest.raises(ValueError, match="neither a .* preset"):
        cls.resolve("no-such-preset")


def test_clip_config_from_full_clip_model_json():
    hf = transformers.CLIPConfig(text_config=dict(hidden_size=64, eos_token_id=2), projection_dim=32).to_dict()
    hf["architectures"] = ["CLIPModel"]
    cfg = CLIPTextConfig.resolve(hf)
    assert (cfg.width, cfg.projection_dim, cfg.pooling) == (64, 32, "argmax")


def _torch_count(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def test_preset_sizes_match_reference_implementations():
    """Shapes only (jax.eval_shape and torch's meta device): nothing is allocated."""
    bigG = CLIPTextConfig.resolve("clip-bigG")
    hf_bigG = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        projection_dim=1280,
        hidden_act="gelu",
    )
    assert num_params(abstract_model("clip", bigG)) == 694_659_840  # SDXL text_encoder_2
    assert num_params(abstract_model("clip", bigG)) == _torch_count(
        lambda: transformers.CLIPTextModelWithProjection(hf_bigG)
    )
    stiv = CLIPTextConfig.resolve("stiv-bigG")
    hf_stiv = transformers.CLIPTextConfig(**{**hf_bigG.to_dict(), "vocab_size": 32128, "max_position_embeddings": 128})
    assert num_params(abstract_model("clip", stiv)) == _torch_count(lambda: transformers.CLIPTextModel(hf_stiv))
    xxl = T5EncoderConfig.resolve("t5-v1_1-xxl")
    hf_xxl = transformers.T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu"
    )
    assert num_params(abstract_model("t5", xxl)) == 4_762_310_656
    assert num_params(abstract_model("t5", xxl)) == _torch_count(lambda: transformers.T5EncoderModel(hf_xxl))
    sd_vae = AutoencoderKLConfig.resolve("sd-vae-ft-ema")
    ref = lambda: diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    assert num_params(abstract_model("vae", sd_vae)) == 83_653_863 == _torch_count(ref)
    assert (sd_vae.downsample, sd_vae.latent_channels, sd_vae.scaling_factor) == (8, 4, 0.18215)
