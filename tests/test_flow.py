"""Flow matching pieces: interpolant, time sampling, frame-replacement tasks, dropout, loss masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stiv_jax.flow import loss as flow_loss
from stiv_jax.flow.interpolant import X_PRED_MIN_GAP, interpolate, velocity_from_data, velocity_target
from stiv_jax.flow.task_table import task_masks
from stiv_jax.flow.tasks import drop_image, drop_text, replace_frames, sample_frame_conditions
from stiv_jax.flow.timesteps import sample_time, shift_time


def test_interpolant_endpoints_and_velocity():
    x1, eps = jax.random.normal(jax.random.key(0), (2, 3, 4))
    t = jnp.array([0.0, 1.0, 0.25])
    xt = interpolate(x1, eps, t)
    np.testing.assert_allclose(xt[0], eps[0])  # t = 0: noise
    np.testing.assert_allclose(xt[1], x1[1])  # t = 1: data
    # v = d x_t / dt, checked by finite differences
    h = 1e-3
    fd = (interpolate(x1, eps, t + h) - interpolate(x1, eps, t - h)) / (2 * h)
    np.testing.assert_allclose(fd, velocity_target(x1, eps), rtol=1e-3, atol=1e-3)


def test_velocity_from_a_perfect_data_prediction_is_the_target():
    """x-prediction: the true x1 gives the true velocity x1 − ε wherever 1 − t ≥ the floor; past
    it (t = 0.99) the step is ``(1 − t) / X_PRED_MIN_GAP`` of it, the same direction."""
    x1, eps = jax.random.normal(jax.random.key(1), (2, 4, 3, 5, 5, 2))
    t = jnp.array([0.0, 0.3, 0.9, 0.99])
    xt = interpolate(x1, eps, t)
    v = np.asarray(velocity_from_data(x1, xt, t))
    want = np.asarray(x1 - eps)
    np.testing.assert_allclose(v[:3], want[:3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(v[3], want[3] * 0.01 / X_PRED_MIN_GAP, rtol=1e-4, atol=1e-5)
    wrong = np.asarray(velocity_from_data(x1 + 0.1, xt, t))  # an error in x̂1 shows, amplified
    np.testing.assert_allclose(wrong[1] - want[1], 0.1 / 0.7, rtol=1e-4)


def test_time_distributions():
    t = np.asarray(sample_time(jax.random.key(0), 200_000))
    assert 0 < t.min() and t.max() < 1
    logits = np.log(t / (1 - t))
    np.testing.assert_allclose([logits.mean(), logits.std()], [0.0, 1.0], atol=0.01)  # logit-normal(0, 1)
    u = np.asarray(sample_time(jax.random.key(1), 200_000, "uniform"))
    np.testing.assert_allclose(np.quantile(u, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75], atol=0.01)
    assert float(shift_time(jnp.array(0.5), 3.0)) == pytest.approx(0.25)  # σ=0.5 → 3·0.5/(1+2·0.5)=0.75
    assert float(jnp.mean(sample_time(jax.random.key(2), 10_000, shift=3.0))) < float(jnp.mean(t))
    with pytest.raises(ValueError, match="unknown time distribution"):
        sample_time(jax.random.key(0), 2, "beta")


def test_task_masks():
    names = ("t2v", "ti2v", "predict", "interpolate", "upsample")
    table = task_masks(names, 8, predict_frames=3)
    np.testing.assert_array_equal(
        table.astype(int),
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0, 1],
            [1, 0, 1, 0, 1, 0, 1, 0],
        ],
    )
    assert not task_masks(names, 1).any()  # images never replace their only frame
    with pytest.raises(ValueError, match="unknown training task"):
        task_masks(("i2v",), 4)


def conditions(key, n, weights, image_dropout, x1=None, null_image="noise"):
    given, keep = sample_frame_conditions(jax.random.key(key), n, 4, weights, image_dropout=image_dropout)
    x1 = jnp.ones((n, 4, 1, 1, 1)) if x1 is None else x1
    mask, latents = drop_image(given, keep, x1, null_image)
    return np.asarray(mask), np.asarray(latents), np.asarray(given), np.asarray(keep)


def test_task_mix_and_image_dropout_rates():
    n = 20_000
    masks, latents, _, _ = conditions(0, n, dict(t2v=0.25, ti2v=0.75), 0.08)
    replaced = masks[:, 0]
    assert not masks[:, 1:].any()
    np.testing.assert_allclose(replaced.mean(), 0.75 * 0.92, atol=0.01)
    np.testing.assert_array_equal(latents, 1.0)  # noise null image: the clean latents, where given
    none, _, _, _ = conditions(1, n, dict(ti2v=1.0), 1.0)
    assert not none.any()


def test_zeros_null_image_keeps_the_frames_given_with_zero_latents():
    """Multi-view's null image (App. J.3): a dropped sample keeps its mask, its given latents are 0."""
    n = 4000
    x1 = jax.random.normal(jax.random.key(5), (n, 4, 2, 2, 3)) + 3.0  # nowhere zero
    mask, latents, given, keep = conditions(2, n, dict(t2v=0.5, multiview=0.5), 0.3, x1, "zeros")
    np.testing.assert_array_equal(mask, given)  # dropout never clears the mask
    np.testing.assert_array_equal(mask[:, 1:], False)
    np.testing.assert_allclose(given[:, 0].mean(), 0.5, atol=0.03)
    np.testing.assert_allclose(1 - keep.mean(), 0.3, atol=0.03)
    np.testing.assert_array_equal(latents[~keep], 0.0)
    np.testing.assert_array_equal(latents[keep], np.asarray(x1)[keep])
    with pytest.raises(ValueError, match="null_image"):
        drop_image(jnp.asarray(given), jnp.asarray(keep), x1, "blank")


def test_text_dropout_uses_the_null_encoding():
    b, L, d = 10_000, 3, 2
    text, mask, pooled = jnp.ones((b, L, d)), jnp.ones((b, L), bool), jnp.ones((b, d))
    null_t, null_m, null_p = jnp.zeros((1, L, d)), jnp.array([[True, False, False]]), jnp.full((1, d), -1.0)
    t2, m2, p2, dropped = drop_text(jax.random.key(0), 0.1, text, mask, pooled, null_t, null_m, null_p)
    dropped = np.asarray(dropped)
    np.testing.assert_allclose(dropped.mean(), 0.1, atol=0.01)
    assert np.all(np.asarray(t2)[dropped] == 0) and np.all(np.asarray(t2)[~dropped] == 1)
    assert np.all(np.asarray(m2)[dropped] == [True, False, False]) and np.all(np.asarray(p2)[dropped] == -1)


def test_loss_ignores_replaced_frames_and_masked_tokens():
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.standard_normal((2, 4, 4, 4, 3)), jnp.float32)
    pred = target + 1.0  # unit error everywhere ...
    cond = jnp.array([[True, False, False, False], [False, False, False, True]])
    pred = jnp.where(cond[:, :, None, None, None], pred + 100.0, pred)  # ... huge on replaced frames
    loss, parts = flow_loss.flow_matching_loss(pred, target, ~cond)
    assert float(loss) == pytest.approx(1.0)
    # MaskDiT: error only on masked tokens is invisible to the denoising loss; the MAE term sees it.
    keep = jnp.array([[True, False, False, True], [False, True, True, False]])  # 2x2 token grid
    visible = flow_loss.pixel_keep_mask(keep, (2, 2), 2)
    np.testing.assert_array_equal(np.asarray(visible[0, :2, :2]), True)
    np.testing.assert_array_equal(np.asarray(visible[0, :2, 2:]), False)
    x_t = target
    pred2 = jnp.where(visible[:, None, :, :, None], target, target + 5.0)
    loss2, parts2 = flow_loss.flow_matching_loss(pred2, target, ~cond, visible, x_t=x_t, mae_weight=0.1)
    assert float(parts2["denoise"]) == pytest.approx(0.0)
    assert float(parts2["mae"]) == pytest.approx(25.0)
    assert float(loss2) == pytest.approx(2.5)


def test_replace_frames():
    xt, x1 = jnp.zeros((1, 3, 2, 2, 1)), jnp.ones((1, 3, 2, 2, 1))
    out = replace_frames(xt, x1, jnp.array([[True, False, True]]))
    np.testing.assert_array_equal(np.asarray(out)[0, :, 0, 0, 0], [1, 0, 1])
