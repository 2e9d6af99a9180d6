"""STIV DiT: shapes, inflation, MaskDiT, gradients and remat (issue: foundation)."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from stiv_jax.model import maskdit
from stiv_jax.model.config import get_model_config, resolve
from stiv_jax.model.surgery import is_temporal, transplant
from tests.model_utils import build, forward, make_inputs, random_model, tiny_config


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config())


@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("cond", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_output_shapes(model, frames, cond, masked):
    x, t, kw = make_inputs(model.cfg, frames=frames, cond=cond)
    if not cond:
        kw["cond_mask"] = None
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5) if masked else None
    out = forward(model, x, t, kw, keep)
    chex.assert_shape(out, x.shape)
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)


def test_bad_inputs_fail_clearly(model):
    x, t, kw = make_inputs(model.cfg, frames=3)
    with pytest.raises(ValueError, match="multiple of temporal patch"):
        model(x, t, **{**kw, "cond_mask": None})
    with pytest.raises(ValueError, match="unknown model size"):
        get_model_config("L")
    with pytest.raises(ValueError, match="remat_policy"):
        get_model_config("tiny", remat_policy="sometimes")
    with pytest.raises(ValueError, match="unknown model config keys \\['pos_embd'\\]"):
        get_model_config("tiny", pos_embd="sincos")  # a typo is not silently ignored
    with pytest.raises(ValueError, match="pos_embed"):
        get_model_config("tiny", pos_embed="learned")
    with pytest.raises(ValueError, match="model.prediction='eps'"):
        get_model_config("tiny", prediction="eps")


def test_config_json_of_older_runs_gets_the_new_keys_defaults():
    old = get_model_config("tiny").to_dict()
    del old["pos_embed"], old["prediction"]
    new = resolve(ml_collections.ConfigDict(old))
    assert (new.pos_embed, new.prediction) == ("none", "v")


def test_x_prediction_turns_the_output_layer_into_clean_latents():
    """With ``prediction='x'`` the same weights' output layer is read as the clean latents x̂1:
    the velocity is ``(x̂1 − x_t) / max(1 − t, 0.05)`` of what the 'v' model returns (numpy
    here), including a time past the floor and frame replacement."""
    v_model = random_model(tiny_config(), seed=2)
    x_model = random_model(tiny_config(prediction="x"), seed=2)
    x, t, kw = make_inputs(v_model.cfg, frames=4, cond=True)
    t = jnp.asarray([0.4, 0.98], jnp.float32)
    raw = np.asarray(forward(v_model, x, t, kw))
    got = np.asarray(forward(x_model, x, t, kw))
    gap = np.maximum(1.0 - np.asarray(t), 0.05)[:, None, None, None, None]
    np.testing.assert_allclose(got, (raw - np.asarray(x)) / gap, rtol=1e-4, atol=1e-4)


def test_t2i_weights_reproduce_image_output_on_static_video():
    """Inflation is exact: T2I params in a video model give, on a static video, the T2I output
    for every frame (temporal attention and the frame indicator start as identity/zero)."""
    t2i = random_model(tiny_config(temporal_attention=False), seed=3, tie_output_frames=True)
    t2v = build(tiny_config(temporal_attention=True), seed=4)
    copied = transplant(t2v, t2i)
    assert copied and not any(is_temporal(p) for p in copied)
    x, t, kw = make_inputs(t2i.cfg, frames=1, cond=False)
    kw["cond_mask"] = None
    image_out = forward(t2i, x, t, kw)
    video = jnp.repeat(x, 6, axis=1)
    video_out = forward(t2v, video, t, kw)
    for f in range(6):
        np.testing.assert_allclose(video_out[:, f], image_out[:, 0], atol=2e-5, rtol=1e-4)
    # The check can fail: with live (random) temporal attention the frames no longer match.
    live = random_model(tiny_config(temporal_attention=True), seed=9)
    transplant(live, t2i)
    assert not np.allclose(forward(live, video, t, kw)[:, 0], image_out[:, 0], atol=1e-3)


def test_maskdit_ratio_zero_equals_unmasked_path(model):
    x, t, kw = make_inputs(model.cfg)
    all_idx = jnp.tile(jnp.arange(16, dtype=jnp.int32)[None], (2, 1))
    np.testing.assert_allclose(forward(model, x, t, kw, all_idx), forward(model, x, t, kw), atol=1e-5)
    np.testing.assert_array_equal(maskdit.sample_keep_indices(jax.random.key(1), 2, 16, 0.0), all_idx)
    part = maskdit.sample_keep_indices(jax.random.key(1), 2, 16, 0.5)
    assert not np.allclose(forward(model, x, t, kw, part), forward(model, x, t, kw), atol=1e-4)


def test_maskdit_keeps_same_spatial_tokens_in_every_frame():
    keep = maskdit.sample_keep_indices(jax.random.key(0), 3, 64, 0.5)
    chex.assert_shape(keep, (3, 32))
    assert all(len(set(np.asarray(row))) == 32 for row in keep)
    assert not np.array_equal(keep[0], keep[1])  # per-sample masks
    tokens = jnp.arange(3 * 5 * 64, dtype=jnp.float32).reshape(3, 5, 64, 1) % 64  # value = spatial id
    kept = maskdit.gather_tokens(tokens, keep)
    for b in range(3):
        for f in range(5):
            np.testing.assert_array_equal(kept[b, f, :, 0], keep[b])
    back = maskdit.scatter_tokens(kept, keep, 64, jnp.full((1,), -1.0))
    vis = maskdit.token_keep_mask(keep, 64)
    np.testing.assert_array_equal(np.where(vis[:, None, :, None], tokens, -1.0), back)


@nnx.jit
def _loss_and_grads(model, x, t, kw, keep):
    def loss_fn(m):
        return jnp.mean(jnp.square(m(x, t, keep_idx=keep, **kw)))

    return nnx.value_and_grad(loss_fn)(model)


def test_gradients_finite_and_reach_every_parameter(model):
    x, t, kw = make_inputs(model.cfg)
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5)
    loss, grads = _loss_and_grads(model, x, t, kw, keep)
    assert np.isfinite(loss)
    for path, g in nnx.to_flat_state(grads):
        g = np.asarray(g[...])
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {path}"


def test_remat_and_scan_do_not_change_loss_or_gradients():
    """Every remat policy (and scan vs unrolled layers) computes the same loss and gradients."""
    x, t, kw = make_inputs(tiny_config(), frames=2, size=8)
    keep = maskdit.sample_keep_indices(jax.random.key(0), 2, 16, 0.5)
    ref_loss, ref_grads = _loss_and_grads(
        random_model(tiny_config(remat_policy="none", scan_layers=False)), x, t, kw, keep
    )
    for policy, scan in [("save_self_attn", True), ("full", False), ("dots", True)]:
        loss, grads = _loss_and_grads(random_model(tiny_config(remat_policy=policy, scan_layers=scan)), x, t, kw, keep)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, err_msg=policy)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6, err_msg=policy), grads, ref_grads
        )


def test_bfloat16_compute_stays_close_to_float32(model):
    x, t, kw = make_inputs(model.cfg)
    f32 = forward(model, x, t, kw)
    bf16 = forward(random_model(tiny_config(dtype="bfloat16")), x, t, kw)
    assert bf16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(bf16 - f32))) < 0.05 * float(jnp.max(jnp.abs(f32)))


def test_rope_only_model_gives_identical_frames_identical_outputs():
    """RoPE is relative and the condition is per clip, so on a video whose frames are all equal
    every frame gets the same velocity: no block can tell frame 0 from frame 3. (This is why a
    T2V caption's motion direction has to be read against the other frames' content; README,
    "What the demo shows".) The check can fail: with frame 3 changed, frames 0 and 1 (still
    equal, but at different offsets from it) get different outputs."""
    model = random_model(tiny_config(temporal_patch_size=1), seed=1)
    x, t, kw = make_inputs(model.cfg, frames=1, cond=False)
    kw["cond_mask"] = jnp.zeros((2, 4), bool)
    video = jnp.repeat(x, 4, axis=1)
    out = np.asarray(forward(model, video, t, kw))
    assert np.abs(out - out[:, :1]).max() <= 1e-5 * np.abs(out).max()
    changed = np.asarray(forward(model, video.at[:, 3].multiply(-1.0), t, kw))
    assert np.abs(changed[:, 1] - changed[:, 0]).max() > 1e-2 * np.abs(changed).max()


def test_sincos_position_table_tells_identical_frames_and_patches_apart():
    """With ``pos_embed='sincos'`` the same clip of identical frames gets a different velocity in
    every frame, and a uniform frame a different one at every patch (RoPE alone gives neither)."""
    model = random_model(tiny_config(temporal_patch_size=1, pos_embed="sincos"), seed=1)
    x, t, kw = make_inputs(model.cfg, frames=1, cond=False)
    kw["cond_mask"] = jnp.zeros((2, 4), bool)
    video = jnp.broadcast_to(x.mean(axis=(2, 3), keepdims=True), x.shape).repeat(4, axis=1)  # uniform frames
    out = np.asarray(forward(model, video, t, kw))
    scale = np.abs(out).max()
    for f in range(1, 4):
        assert np.abs(out[:, f] - out[:, 0]).max() > 1e-2 * scale, f
    assert np.abs(out[:, 0, :2, :2] - out[:, 0, -2:, -2:]).max() > 1e-2 * scale
