"""The model probes: frame-order asymmetry and prompt sensitivity, against exact invariances."""

import jax.numpy as jnp
import numpy as np

from stiv_jax import probe
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
