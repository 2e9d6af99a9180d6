"""CLIP text / T5 encoder parity against transformers (random init, small configs, float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install stiv_jax[torch]")
transformers = pytest.importorskip("transformers", reason="parity tests need the torch extra")

from stiv_jax.encoders.build import build_text_encoder  # noqa: E402
from stiv_jax.text.clip import CLIPTextConfig  # noqa: E402
from stiv_jax.text.convert import convert_clip, convert_t5  # noqa: E402
from stiv_jax.text.t5 import T5EncoderConfig, relative_position_bucket  # noqa: E402
from stiv_jax.weights.torch_state import ConversionError  # noqa: E402

RTOL = 1e-4


def max_rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))


def state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def batch(vocab: int, lengths: list[int], total: int, eos: int, seed: int = 0):
    """Right-padded ids ending in ``eos`` at each row's last real position, plus the mask."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), total), np.int64)
    mask = np.zeros((len(lengths), total), np.int64)
    for i, n in enumerate(lengths):
        body = rng.integers(3, vocab, size=n - 1)
        body[body == eos] = 3
        ids[i, : n - 1], ids[i, n - 1], mask[i, :n] = body, eos, 1
    return ids, mask


def _hf_clip(with_projection: bool, **kw):
    cfg = transformers.CLIPTextConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=24,
        **kw,
    )
    cls = transformers.CLIPTextModelWithProjection if with_projection else transformers.CLIPTextModel
    torch.manual_seed(0)
    return cls(cfg).eval(), cfg


@pytest.mark.parametrize(
    "with_projection, hf_kw, vocab_eos",
    [
        (False, dict(hidden_act="quick_gelu", eos_token_id=2, bos_token_id=0, pad_token_id=1), 98),  # legacy argmax
        (True, dict(hidden_act="gelu", eos_token_id=7, bos_token_id=0, pad_token_id=1), 7),  # bigG-like, first EOS
    ],
)
def test_clip_matches_transformers(with_projection, hf_kw, vocab_eos):
    hf, hf_cfg = _hf_clip(with_projection, **hf_kw)
    d = hf_cfg.to_dict()
    if with_projection:
        d["architectures"] = ["CLIPTextModelWithProjection"]
    cfg = CLIPTextConfig.resolve(d)
    assert cfg.pooling == ("eos" if with_projection else "argmax")
    ids, mask = batch(99, [5, 11, 16], 16, eos=vocab_eos)
    if not with_projection:  # legacy rule: pooled at the largest id, which need not be the last token
        ids[0, 1] = 98
    model = convert_clip(state_dict(hf), cfg)
    ours = jax.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    valid = mask.astype(bool)
    assert max_rel_err(np.asarray(ours.hidden)[valid], ref.last_hidden_state.numpy()[valid]) <= RTOL
    if with_projection:
        assert max_rel_err(ours.projected, ref.text_embeds.numpy()) <= RTOL
    else:
        assert ours.projected is None
        assert max_rel_err(ours.pooled, ref.pooler_output.numpy()) <= RTOL


def test_build_text_encoder_last_token_pooling():
    """STIV's rule: pooled = state at the last real token; causal, so padding cannot leak in."""
    model = dict(vocab_size=50, width=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=12, pooling="last")
    enc = build_text_encoder({"kind": "clip", "model": model, "seed": 1})
    assert (enc.kind, enc.dim, enc.pooled_dim) == ("clip", 32, 32)
    ids, mask = batch(50, [4, 9], 12, eos=1)
    tokens, pooled = enc.encode(ids, mask.astype(bool))
    assert tokens.shape == (2, 12, 32) and pooled.shape == (2, 32) and pooled.dtype == jnp.float32
    np.testing.assert_array_equal(pooled[0], tokens[0, 3])
    np.testing.assert_array_equal(pooled[1], tokens[1, 8])
    assert np.all(np.asarray(tokens)[~mask.astype(bool)] == 0)
    _, pooled_other_padding = enc.encode(np.where(mask, ids, 17), mask.astype(bool))
    np.testing.assert_allclose(pooled_other_padding, pooled, rtol=1e-6, atol=1e-6)


def _hf_t5(feed_forward_proj: str):
    cfg = transformers.T5Config(
        vocab_size=101,
        d_model=32,
        d_kv=12,
        d_ff=72,
        num_layers=3,
        num_heads=4,
        feed_forward_proj=feed_forward_proj,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
        dropout_rate=0.0,
    )
    torch.manual_seed(0)
    return transformers.T5EncoderModel(cfg).eval(), cfg


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu"])
def test_t5_matches_transformers(feed_forward_proj):
    hf, hf_cfg = _hf_t5(feed_forward_proj)
    cfg = T5EncoderConfig.resolve(hf_cfg.to_dict())
    assert cfg.gated == (feed_forward_proj == "gated-gelu")
    ids, mask = batch(101, [6, 24, 13], 24, eos=1)
    model = convert_t5(state_dict(hf), cfg)
    ours = jax.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    valid = mask.astype(bool)
    assert max_rel_err(np.asarray(ours)[valid], ref[valid]) <= RTOL


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 20), (8, 64)])
def test_relative_position_bucket_matches_transformers(num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-400, 401)
    ref = T5Attention._relative_position_bucket(torch.tensor(rel), True, num_buckets, max_distance).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel, num_buckets, max_distance), ref)


def test_converter_names_bad_shape_missing_and_unexpected_keys():
    hf, hf_cfg = _hf_t5("gated-gelu")
    cfg = T5EncoderConfig.resolve(hf_cfg.to_dict())
    sd = state_dict(hf)
    bad = dict(sd)
    bad["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"] = np.zeros((71, 32), np.float32)
    with pytest.raises(ConversionError, match=r"encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1\.weight.*\(71, 32\)"):
        convert_t5(bad, cfg)
    bad = {k: v for k, v in sd.items() if k != "encoder.block.2.layer.0.SelfAttention.k.weight"}
    with pytest.raises(
        ConversionError, match=r"missing keys \(1\): encoder\.block\.2\.layer\.0\.SelfAttention\.k\.weight"
    ):
        convert_t5(bad, cfg)
    bad = {**sd, "encoder.block.0.layer.0.SelfAttention.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(
        ConversionError, match=r"unexpected keys \(1\): encoder\.block\.0\.layer\.0\.SelfAttention\.extra"
    ):
        convert_t5(bad, cfg)
    clip, clip_cfg = _hf_clip(False)
    with pytest.raises(ConversionError, match=r"missing keys .*text_projection\.weight"):
        convert_clip(state_dict(clip), CLIPTextConfig.resolve(clip_cfg.to_dict()).replace(projection_dim=24))
