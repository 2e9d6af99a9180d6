"""CLIP vision tower and CLIP score (CLIPSIM) against transformers (random init, small configs, float32)."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install stiv_jax[torch]")
transformers = pytest.importorskip("transformers", reason="parity tests need the torch extra")

from stiv_jax.eval import clip_score as cs  # noqa: E402
from stiv_jax.eval.clip_vision import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    CLIPVisionConfig,
    convert_clip_vision,
    load_clip_vision,
    preprocess,
)
from stiv_jax.text.clip import CLIPTextConfig  # noqa: E402
from stiv_jax.text.convert import convert_clip  # noqa: E402
from stiv_jax.weights.torch_state import ConversionError  # noqa: E402

RTOL = 1e-4
VOCAB, EOS, LENGTH = 99, 98, 16
VISION = dict(
    image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
)


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


def state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def fake_tokenizer(prompts):
    """Character codes, then EOS, right-padded with 0 to ``LENGTH`` (a stand-in for CLIP's BPE)."""
    ids = np.zeros((len(prompts), LENGTH), np.int64)
    mask = np.zeros((len(prompts), LENGTH), np.int64)
    for i, p in enumerate(prompts):
        toks = [3 + ord(c) % 90 for c in p][: LENGTH - 1] + [EOS]
        ids[i, : len(toks)], mask[i, : len(toks)] = toks, 1
    return ids, mask


@pytest.fixture(scope="module")
def clip_pair():
    """A small random HF ``CLIPModel`` and our text + vision towers converted from its state dict."""
    text = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=LENGTH,
        hidden_act="gelu",
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=EOS,
    )
    hf_cfg = transformers.CLIPConfig(text_config=text, vision_config=VISION, projection_dim=24)
    torch.manual_seed(1)
    hf = transformers.CLIPModel(hf_cfg).eval()
    d = hf_cfg.to_dict() | {"architectures": ["CLIPModel"]}
    sd = state_dict(hf)
    text_model = convert_clip(sd, CLIPTextConfig.resolve(d))
    vision_cfg = CLIPVisionConfig.resolve(d)
    assert (vision_cfg.projection_dim, vision_cfg.num_patches, vision_cfg.activation) == (24, 16, "quick_gelu")
    return hf, text_model, convert_clip_vision(sd, vision_cfg)


def _hf_vision(**kw):
    cfg = transformers.CLIPVisionConfig(**VISION, projection_dim=32, **kw)
    torch.manual_seed(0)
    return transformers.CLIPVisionModelWithProjection(cfg).eval(), cfg


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_vision_matches_transformers(act):
    hf, hf_cfg = _hf_vision(hidden_act=act)
    cfg = CLIPVisionConfig.resolve(hf_cfg.to_dict())
    assert (cfg.projection_dim, cfg.activation, cfg.width, cfg.num_layers) == (32, act, 64, 2)
    model = convert_clip_vision(state_dict(hf), cfg)
    pixels = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)  # normalised, NHWC
    ours = jax.jit(lambda m, x: m(x))(model, jnp.asarray(pixels))
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()), output_hidden_states=True)
    assert max_rel_err(ours.projected, ref.image_embeds.numpy()) <= RTOL
    assert max_rel_err(ours.hidden, ref.last_hidden_state.numpy()) <= RTOL


def test_converter_names_bad_keys():
    hf, hf_cfg = _hf_vision()
    sd = state_dict(hf)
    del sd["vision_model.encoder.layers.1.mlp.fc1.bias"]
    sd["vision_model.embeddings.position_embedding.weight"] = np.zeros((5, 64), np.float32)
    sd["vision_model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as err:
        convert_clip_vision(sd, CLIPVisionConfig.resolve(hf_cfg.to_dict()))
    msg = str(err.value)
    assert "encoder.layers.1.mlp.fc1.bias" in msg and "missing" in msg
    assert "embeddings.position_embedding.weight" in msg and "(5, 64)" in msg and "(17, 64)" in msg
    assert "extra.weight" in msg and "unexpected" in msg


def test_load_clip_vision_from_hf_directory(tmp_path):
    hf, _ = _hf_vision()
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors
    model = load_clip_vision(str(tmp_path))
    pixels = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).image_embeds.numpy()
    assert max_rel_err(model(jnp.asarray(pixels)).projected, ref) <= RTOL


def test_bare_vision_model_has_no_projection():
    cfg = CLIPVisionConfig.from_hf({**VISION, "architectures": ["CLIPVisionModel"]})
    assert cfg.projection_dim is None
    assert CLIPVisionConfig.resolve("clip-L/14").num_patches == 256


def test_preprocess_geometry_and_pil():
    """Shorter side → S, centre crop, CLIP normalisation; close to HF's PIL processor on a smooth image."""
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)  # already S×S: normalisation only
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    np.testing.assert_allclose(preprocess(jnp.asarray(square), 32)[0], (square[0] / 255 - mean) / std, atol=1e-5)
    coarse = rng.integers(0, 256, (1, 12, 20, 3)).astype(np.float32)
    smooth = jax.image.resize(jnp.asarray(coarse), (1, 120, 200, 3), "linear")
    smooth = np.asarray(jnp.clip(jnp.round(smooth), 0, 255)).astype(np.uint8)
    ours = np.asarray(preprocess(jnp.asarray(smooth), 112))
    assert ours.shape == (1, 112, 112, 3)
    processor = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor is None:
        pytest.skip("transformers has no CLIPImageProcessorPil")
    proc = processor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112})
    ref = proc(images=[smooth[0]], return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    levels = np.abs(ours[0] - ref) * std * 255  # difference in uint8 levels
    assert levels.mean() < 0.5 and levels.max() < 2.5, (levels.mean(), levels.max())


def _reference_scores(hf, videos, prompts):
    """Direct transformers computation on our preprocessed pixels (preprocessing is not under test)."""
    b, t = videos.shape[:2]
    pixels = np.asarray(preprocess(jnp.asarray(videos.reshape(b * t, *videos.shape[2:])), 32))
    ids, mask = fake_tokenizer(prompts)
    with torch.no_grad():
        img = hf.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
        txt = hf.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    img, txt = (getattr(x, "pooler_output", x).numpy().astype(np.float64) for x in (img, txt))
    img /= np.linalg.norm(img, axis=-1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=-1, keepdims=True)
    return 100 * np.einsum("btd,bd->bt", img.reshape(b, t, -1), txt).mean(axis=1)


def test_clip_score_matches_transformers(clip_pair):
    hf, text_model, vision_model = clip_pair
    videos = np.random.default_rng(2).integers(0, 256, (3, 4, 40, 48, 3), dtype=np.uint8)
    prompts = ["a red fox in the snow", "waves", "a timelapse of a city at night"]
    kw = dict(text_model=text_model, vision_model=vision_model, tokenizer=fake_tokenizer, batch_size=8)
    scores = cs.clip_scores(videos, prompts, **kw)
    assert scores.shape == (3,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, _reference_scores(hf, videos, prompts), rtol=RTOL, atol=1e-4)
    assert cs.clip_score(videos, prompts, **kw) == pytest.approx(scores.mean(), rel=1e-12)


def test_clip_score_definition(clip_pair):
    """A video of one repeated frame scores as that frame; scores are 100·cos of the embeddings."""
    _, text_model, vision_model = clip_pair
    kw = dict(text_model=text_model, vision_model=vision_model, tokenizer=fake_tokenizer, batch_size=8)
    frames = np.random.default_rng(3).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    prompts = ["a cat", "a dog"]
    still = np.repeat(frames[:, None], 5, axis=1)  # [2, 5, H, W, 3]
    single = cs.clip_scores(frames[:, None], prompts, **kw)
    np.testing.assert_allclose(cs.clip_scores(still, prompts, **kw), single, rtol=1e-6, atol=1e-6)
    text = cs.text_embeddings(prompts, text_model=text_model, tokenizer=fake_tokenizer)
    image = cs.image_embeddings(frames, vision_model=vision_model)
    np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(single, 100 * np.sum(text * image, axis=-1), rtol=1e-6, atol=1e-6)
    mixed = np.stack([frames[0], frames[1]])[None]  # one video with both frames, prompt 0
    expected = 100 * np.mean(image @ text[0])
    assert cs.clip_scores(mixed, prompts[:1], **kw)[0] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    with pytest.raises(ValueError, match="prompts"):
        cs.clip_scores(still, prompts[:1], **kw)


def test_captioned_clip_score_mixed_sizes(clip_pair):
    """Videos of different sizes with captions (``stiv_jax.eval.videos.Video``-like) = per-video scores."""
    _, text_model, vision_model = clip_pair
    kw = dict(text_model=text_model, vision_model=vision_model, tokenizer=fake_tokenizer, batch_size=8)
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 256, (3, 40, 48, 3), np.uint8), rng.integers(0, 256, (2, 36, 36, 3), np.uint8)
    Captioned = collections.namedtuple("Captioned", "frames caption")
    expected = [cs.clip_scores(v[None], [p], **kw)[0] for v, p in ((a, "a cat"), (b, "rain"))]
    got = cs.captioned_clip_score([Captioned(a, "a cat"), Captioned(b, "rain")], **kw)
    assert got == pytest.approx(np.mean(expected), rel=1e-9)
    with pytest.raises(ValueError, match="caption"):
        cs.captioned_clip_score([Captioned(a, "")], **kw)
