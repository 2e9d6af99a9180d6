"""The model probes: frame-order asymmetry and prompt sensitivity, against exact invariances."""

import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.apps import probe
from tests.model_utils import make_inputs, random_model, tiny_config


def _frame_independent(kw):
    return {k: v for k, v in kw.items() if k != "cond_mask"}


def test_time_reversal_asymmetry_is_zero_without_temporal_attention_only():
    # With one frame per token and no temporal attention every frame is processed on its own, so
    # the model commutes exactly with reversing the frames; temporal attention's RoPE breaks that.
    for temporal, check in ((False, lambda a: a < 1e-5), (True, lambda a: a > 1e-2)):
        cfg = tiny_config(temporal_patch_size=1, temporal_attention=temporal)
        x, t, kw = make_inputs(cfg, cond=False)
        a = probe.time_reversal_asymmetry(random_model(cfg, seed=1), x, t, _frame_independent(kw))
        assert check(a), (temporal, a)


def test_word_sensitivity_is_zero_for_the_same_prompt_and_positive_for_another():
    cfg = tiny_config()
    model = random_model(cfg, seed=2)
    x, t, kw = make_inputs(cfg, cond=False)
    rng = np.random.default_rng(0)
    table = {w: rng.standard_normal(cfg.text_dim).astype(np.float32) for w in ("red", "blue", "circle")}

    def encode(prompts):
        text = jnp.asarray([[table[w] for w in p.split()] for p in prompts])
        return dict(text=text, text_mask=jnp.ones(text.shape[:2], bool), pooled_text=text.mean(1))

    got = probe.word_sensitivity(model, encode, x, t, kw["micro"], "red circle", ["red circle", "blue circle"])
    assert got["red circle"] == 0.0 and got["blue circle"] > 1e-2, got


def test_caption_loss_gain_is_the_analytic_loss_difference_on_denoised_frames_only():
    # A stand-in model that predicts the exact velocity plus an error set by the prompt, 100× larger
    # on frame 0: the gain is then err² averaged over the frames the loss covers, and only over
    # the rows whose caption the edit changed.
    rng = np.random.default_rng(0)
    x1 = jnp.asarray(rng.standard_normal((4, 4, 3, 3, 2)), jnp.float32)
    offsets = {"base": 0.0, "wrong": 0.5}
    frame_weight = jnp.asarray([100.0, 1.0, 1.0, 1.0])[None, :, None, None, None]

    def model(x_t, t, *, pooled_text, cond_mask=None, **_):
        exact = (x1 - x_t) / (1.0 - t)[:, None, None, None, None]
        return exact + pooled_text[:, 0][:, None, None, None, None] * frame_weight

    def encode(prompts):
        return dict(pooled_text=jnp.asarray([[offsets[p]] for p in prompts]))

    captions = ["base"] * 4
    edits = {"same": captions, "half wrong": ["wrong", "base", "wrong", "base"]}
    micro = jnp.zeros((4, 6))
    t2v = probe.caption_loss_gain(model, encode, x1, micro, captions, edits, (0.2, 0.6), jax.random.key(0))
    first = jnp.zeros((4, 4), bool).at[:, 0].set(True)
    ti2v = probe.caption_loss_gain(model, encode, x1, micro, captions, edits, (0.2, 0.6), jax.random.key(0), first)
    assert t2v["same"] == [0.0, 0.0] and ti2v["same"] == [0.0, 0.0]
    np.testing.assert_allclose(t2v["half wrong"], [0.25 * (100**2 + 3) / 4] * 2, rtol=1e-4)
    np.testing.assert_allclose(ti2v["half wrong"], [0.25] * 2, rtol=1e-4)


def test_demo_caption_edits_swap_one_word():
    edits = probe.demo_caption_edits(["a red circle moving left", "a blue square standing still"])
    assert edits["colour"] == ["a green circle moving left", "a yellow square standing still"]
    assert edits["shape"] == ["a red square moving left", "a blue triangle standing still"]
    assert edits["direction reversed"] == ["a red circle moving right", "a blue square standing still"]
    assert edits["other axis"] == ["a red circle moving up", "a blue square standing still"]
    assert edits["standing still"] == ["a red circle standing still", "a blue square standing still"]
