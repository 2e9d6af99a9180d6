"""Flax → Hugging Face export (text/convert.py: clip_to_hf, t5_to_hf; vae/convert.py: vae_to_diffusers):
strict loading, output parity with transformers/diffusers, bit-exact and config round trips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="export tests need the torch extra: pip install stiv_jax[torch]")
transformers = pytest.importorskip("transformers", reason="export tests need the torch extra")
diffusers = pytest.importorskip("diffusers", reason="export tests need the torch extra")

from stiv_jax.encoders.pretrained import random_init  # noqa: E402
from stiv_jax.text.clip import CLIPTextConfig  # noqa: E402
from stiv_jax.text.convert import (  # noqa: E402
    clip_hf_config,
    clip_rules,
    clip_to_hf,
    convert_clip,
    convert_t5,
    t5_hf_config,
    t5_to_hf,
)
from stiv_jax.text.t5 import T5EncoderConfig  # noqa: E402
from stiv_jax.vae.autoencoder_kl import AutoencoderKLConfig  # noqa: E402
from stiv_jax.vae.convert import convert_vae, vae_diffusers_config, vae_to_diffusers  # noqa: E402
from stiv_jax.weights.torch_state import ConversionError, flat_params, invert_rules  # noqa: E402

RTOL = 1e-5

CLIP = dict(vocab_size=100, width=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=16)
CLIP_CASES = {
    "projection-eos-gelu": dict(CLIP, projection_dim=24, pooling="eos", eos_token_id=7, activation="gelu"),
    "plain-argmax-quick_gelu": dict(CLIP, pooling="argmax", eos_token_id=2),
}
T5 = dict(vocab_size=100, width=32, num_layers=2, num_heads=4, head_dim=8, mlp_dim=64, num_buckets=16, max_distance=20)
T5_CASES = {"gated-gelu_tanh": dict(T5), "plain-relu": dict(T5, gated=False, activation="relu")}
VAE = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
VAE_CASES = {
    "sd-like": dict(VAE),
    "sd3-like": dict(VAE, latent_channels=16, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
    "no-mid-attention": dict(VAE, mid_block_add_attention=False),
}


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


def randomized(kind: str, cfg, seed: int = 0):
    """Our random module with every parameter shifted by noise, so no bias or norm is trivial
    (a swapped or dropped zero bias would otherwise go unnoticed)."""
    model = random_init(kind, cfg, seed)
    rng = np.random.default_rng(seed + 1)
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda v: v + rng.normal(0, 0.05, v.shape).astype(np.float32), state))
    return model


def load_strict(module: torch.nn.Module, sd: dict[str, np.ndarray]) -> torch.nn.Module:
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return module.eval()


def batch(vocab: int, lengths: list[int], total: int, eos: int, seed: int = 0):
    """Right-padded ids ending in ``eos`` at each row's last real position, plus the mask."""
    rng = np.random.default_rng(seed)
    ids, mask = np.zeros((len(lengths), total), np.int64), np.zeros((len(lengths), total), np.int64)
    for i, n in enumerate(lengths):
        body = rng.integers(3, vocab - 1, size=n - 1)
        body[body == eos] = 3
        ids[i, : n - 1], ids[i, n - 1], mask[i, :n] = body, eos, 1
    return ids, mask


def assert_same_params(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_clip_to_hf_matches_transformers(case):
    cfg = CLIPTextConfig(**CLIP_CASES[case])
    model = randomized("clip", cfg)
    hf_cfg, sd = clip_to_hf(model)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous and v.flags.writeable for v in sd.values())
    config = transformers.CLIPTextConfig(**hf_cfg)
    cls = transformers.CLIPTextModelWithProjection if cfg.projection_dim else transformers.CLIPTextModel
    hf = load_strict(cls(config), sd)

    ids, mask = batch(cfg.vocab_size, [16, 9], 16, eos=cfg.eos_token_id)
    if cfg.pooling == "argmax":  # pooled at the largest id, which here is not the last token
        ids[1, 2] = cfg.vocab_size - 1
    ours = jax.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    valid = mask.astype(bool)
    assert max_rel_err(np.asarray(ours.hidden)[valid], ref.last_hidden_state.numpy()[valid]) <= RTOL
    if cfg.projection_dim:
        assert max_rel_err(ours.projected, ref.text_embeds.numpy()) <= RTOL
    else:
        assert max_rel_err(ours.pooled, ref.pooler_output.numpy()) <= RTOL

    assert CLIPTextConfig.from_hf(config.to_dict()) == cfg  # through transformers' own config
    assert_same_params(flat_params(convert_clip(sd, cfg)), flat_params(model))


@pytest.mark.parametrize("case", sorted(T5_CASES))
def test_t5_to_hf_matches_transformers(case):
    cfg = T5EncoderConfig(**T5_CASES[case])
    model = randomized("t5", cfg)
    hf_cfg, sd = t5_to_hf(model)
    config = transformers.T5Config(**hf_cfg)
    assert config.is_gated_act == cfg.gated
    hf = load_strict(transformers.T5EncoderModel(config), sd)

    ids, mask = batch(cfg.vocab_size, [24, 13], 24, eos=1)
    ours = jax.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    valid = mask.astype(bool)
    assert max_rel_err(np.asarray(ours)[valid], ref[valid]) <= RTOL

    assert T5EncoderConfig.from_hf(config.to_dict()) == cfg
    assert_same_params(flat_params(convert_t5(sd, cfg)), flat_params(model))


@pytest.mark.parametrize("case", sorted(VAE_CASES))
def test_vae_to_diffusers_matches_diffusers(case):
    cfg = AutoencoderKLConfig(**VAE_CASES[case])
    model = randomized("vae", cfg)
    hf_cfg, sd = vae_to_diffusers(model)
    vae = load_strict(diffusers.AutoencoderKL(**hf_cfg), sd)
    if cfg.mid_block_add_attention:  # the current diffusers layout: Linear weights, not 1x1 convs
        assert sd["encoder.mid_block.attentions.0.to_q.weight"].shape == (16, 16)

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = rng.normal(size=(2, 8, 8, cfg.latent_channels)).astype(np.float32)
    mean, logvar = jax.jit(lambda m, x: m.encode(x))(model, x)
    decoded = jax.jit(lambda m, z: m.decode(z))(model, z)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
    with torch.no_grad():
        post = vae.encode(nchw(x)).latent_dist
        ref_decoded = vae.decode(nchw(z)).sample
    assert max_rel_err(mean, nhwc(post.mean)) <= RTOL
    assert max_rel_err(logvar, nhwc(post.logvar)) <= RTOL
    assert max_rel_err(decoded, nhwc(ref_decoded)) <= RTOL

    assert AutoencoderKLConfig.from_hf(dict(vae.config)) == cfg
    assert_same_params(flat_params(convert_vae(sd, cfg)), flat_params(model))


@pytest.mark.parametrize("name", sorted(CLIPTextConfig.PRESETS))
def test_clip_preset_configs_round_trip(name):
    cfg = CLIPTextConfig.resolve(name)
    hf = clip_hf_config(cfg)
    assert CLIPTextConfig.resolve(hf) == cfg
    assert CLIPTextConfig.from_hf(transformers.CLIPTextConfig(**hf).to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(T5EncoderConfig.PRESETS))
def test_t5_preset_configs_round_trip(name):
    cfg = T5EncoderConfig.resolve(name)
    assert t5_hf_config(cfg)["feed_forward_proj"] == "gated-gelu"
    assert T5EncoderConfig.resolve(t5_hf_config(cfg)) == cfg


@pytest.mark.parametrize("name", sorted(AutoencoderKLConfig.PRESETS))
def test_vae_preset_configs_round_trip(name):
    cfg = AutoencoderKLConfig.resolve(name)
    assert AutoencoderKLConfig.resolve(vae_diffusers_config(cfg)) == cfg


def test_bfloat16_params_export_as_float32():
    cfg = CLIPTextConfig(**CLIP_CASES["projection-eos-gelu"], param_dtype="bfloat16")
    model = random_init("clip", cfg)
    _, sd = clip_to_hf(model)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous and v.flags.writeable for v in sd.values())
    ours = flat_params(model)["token_embedding.embedding"].astype(np.float32)
    np.testing.assert_array_equal(sd["text_model.embeddings.token_embedding.weight"], ours)


def test_invert_rules_names_missing_and_unruled_params():
    cfg = CLIPTextConfig(**CLIP)
    params = flat_params(random_init("clip", cfg))
    del params["layers.attn.k.kernel"]
    params["layers.extra.bias"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ConversionError) as err:
        invert_rules(params, clip_rules(cfg), what="CLIPTextModel")
    assert "missing parameters (1): layers.attn.k.kernel" in str(err.value)
    assert "parameters without a rule (1): layers.extra.bias" in str(err.value)
