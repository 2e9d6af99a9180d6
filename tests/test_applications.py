"""The paper's applications (issue 27) on tiny runs fine-tuned from a tiny T2V run with the real
trainer: the T2V → STIV-TUP cascade (App. J.2) through the library and ``stiv-sample``, STIV-V2V
video prediction (App. J.1), and the demo's measurements against analytic cases."""

import os
import subprocess
import sys

import numpy as np
import pytest

from stiv_jax.apps import long_video, prediction, report, upsampling
from stiv_jax.data import synthetic, video_io
from stiv_jax.sampling import cascade, pipeline
from tests.train_utils import demo_tokenizer, tiny_train_config
from tests.train_utils import run as train

T, R = 4, 16
FAST = dict(steps=3, emulated_steps=10)
STIV_SAMPLE = os.path.join(os.path.dirname(sys.executable), "stiv-sample")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(T2V run, TUP run): the TUP run starts from the T2V run's EMA weights (init_from) and trains
    the ``upsample`` task on 7-frame clips at stride 2."""
    root = tmp_path_factory.mktemp("tup")
    common = {"data.tokenizer_path": demo_tokenizer(root), "model.temporal_patch_size": 1}
    t2v, tup = str(root / "t2v"), str(root / "tup")
    train(tiny_train_config(num_train_steps=2, **common), t2v)
    tup_config = tiny_train_config(
        num_train_steps=2,
        **common,
        **{
            "tasks.t2v": 0.0,
            "tasks.ti2v": 0.0,
            "tasks.upsample": 1.0,
            "data.num_frames": 2 * T - 1,
            "data.frame_strides": (2,),
            "init_from.spatial": t2v,
            "init_from.temporal": t2v,
        },
    )
    final = train(tup_config, tup)
    assert np.isfinite(final["loss"])
    v2v = str(root / "v2v")
    v2v_config = tiny_train_config(
        num_train_steps=2,
        predict_frames=2,
        **common,
        **{
            "tasks.t2v": 0.0,
            "tasks.ti2v": 0.0,
            "tasks.predict": 1.0,
            "init_from.spatial": t2v,
            "init_from.temporal": t2v,
        },
    )
    assert np.isfinite(train(v2v_config, v2v)["loss"])
    return t2v, tup, v2v


def test_cascade_keeps_the_given_frames_and_fills_the_gaps(runs):
    t2v, upsampler = (pipeline.load_sampler(w, log=lambda m: None) for w in runs[:2])
    prompts = ["a red circle moving right", "a blue square moving up"]
    low = t2v.generate(prompts, task="t2v", seed=3, **FAST)
    high = cascade.upsample(upsampler, prompts, low, seed=3)
    assert high.shape == (2, 2 * T - 1, R, R, 3)
    np.testing.assert_array_equal(high[:, ::2], low)  # lossless pixel autoencoder: exactly
    assert not np.array_equal(high[:, 1], high[:, 0])  # the inserted frames are sampled, not copies
    np.testing.assert_array_equal(high, cascade.upsample(upsampler, prompts, low, seed=3))  # seeded
    report = upsampling.cascade_report(low, high, prompts)
    assert report["given_kept"] and report["moving_clips"] == 2 and report["inserted_frames"] == 2 * (T - 1)
    with pytest.raises(ValueError, match="3 videos for 2 prompts"):
        cascade.upsample(upsampler, prompts, np.concatenate([low, low[:1]]))


def test_stiv_sample_upsample_with(runs, tmp_path):
    t2v, tup, _ = runs
    out = str(tmp_path / "clip.mp4")
    base = [STIV_SAMPLE, f"--workdir={t2v}", "--prompt=a red circle moving right", "--steps=3", "--emulated_steps=10"]
    proc = subprocess.run(
        [*base, f"--upsample_with={tup}", f"--out={out}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [out]
    assert video_io.decode_video(out).shape == (2 * T - 1, R, R, 3)
    for flags, message in (
        ([f"--upsample_with={tup}", "--task=t2i"], "--upsample_with needs a video task"),
        ([f"--upsample_with={tmp_path / 'nothing'}"], "--upsample_with"),
    ):
        proc = subprocess.run(
            [*base, *flags, f"--out={tmp_path / 'x.mp4'}"], capture_output=True, text=True, timeout=300
        )
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("stiv-sample: error: "), proc.stderr
        assert message in lines[0] and "loaded" not in proc.stderr


def test_video_prediction_keeps_the_given_frames_and_is_measured(runs):
    """The V2V run predicts from its first 2 frames; the report compares it with the base run's T2V
    and zero-shot prediction and with copying the last frame, all under the demo's FVD protocol."""
    base, predictor = (pipeline.load_sampler(w, log=lambda m: None) for w in (runs[0], runs[2]))
    predictor.config.sampling.steps = base.config.sampling.steps = 3
    prompts = ["a red circle moving right", "a blue square moving up", "a green triangle moving left"]
    result = prediction.prediction_report(predictor, base, prompts, seed=1)
    assert result["given_kept"] and result["given_frames"] == 2 and result["frames"] == T
    assert {"v2v", "zero_shot", "copy_last", "t2v_s1", "real"} <= set(result["fvd"])
    assert all(np.isfinite(v) and v >= 0 for v in result["fvd"].values())
    assert result["predicted_frames"]["copy_last"]["psnr_db"] < 200  # the demo shapes move
    clips = np.arange(2 * 4 * 1 * 1 * 3, dtype=np.uint8).reshape(2, 4, 1, 1, 3)
    copied = prediction.copy_last(clips, 2)
    np.testing.assert_array_equal(copied[:, :2], clips[:, :2])
    np.testing.assert_array_equal(copied[:, 2:], np.repeat(clips[:, 1:2], 2, axis=1))


def test_centroids_follow_a_rendered_shape():
    """The sub-pixel centroid of a rendered square moving right advances by the rendered step."""
    clip = synthetic.render_clip("red", "square", "right", 9, 48, np.random.default_rng(0))
    c = report.centroids(clip)
    steps = np.diff(c, axis=0)
    assert np.all(steps[:, 1] > 0) and np.abs(steps[:, 0]).max() < 0.1
    np.testing.assert_allclose(steps[:, 1], steps[:, 1].mean(), atol=0.15)  # constant speed
    assert np.isnan(report.centroids(np.zeros((1, 8, 8, 3), np.uint8))).all()


def test_between_and_baselines_on_analytic_cases():
    a, b = np.array([10.0, 10.0]), np.array([10.0, 14.0])
    assert upsampling.between(a, np.array([10.3, 12.0]), b)
    assert not upsampling.between(a, a, b)  # a repeated frame is not between
    assert not upsampling.between(a, np.array([10.0, 15.0]), b)  # past the end
    assert not upsampling.between(a, np.array([12.0, 12.0]), b)  # 2 px off the path
    assert not upsampling.between(a, np.array([10.0, 12.0]), a)  # no motion: nothing is between
    clip = synthetic.render_clip("green", "circle", "down", 7, 32, np.random.default_rng(2))
    clips = upsampling.baselines(clip[None])
    np.testing.assert_array_equal(clips["repeat"][0, 1::2], clip[0:-1:2])
    scores = {k: upsampling.grouped_scores(clip[None], v, ["a green circle moving down"]) for k, v in clips.items()}
    assert set(scores["blend"]) == {"moving", "all"}  # no still caption: no "still" group
    scores = {k: v["moving"] for k, v in scores.items()}
    step = np.linalg.norm(np.diff(report.centroids(clip), axis=0), axis=-1).mean()
    assert scores["repeat"]["centroid_error_px"] == pytest.approx(step, rel=0.1)  # one step behind
    assert scores["blend"]["centroid_error_px"] < 0.2 * step  # the cross-fade's centroid is right
    assert scores["blend"]["psnr_db"] > scores["repeat"]["psnr_db"]
    assert report.psnr(clip, clip) == pytest.approx(200.0)
    noisy = np.clip(clip.astype(int) + 10, 0, 255).astype(np.uint8)
    assert report.psnr(clip, noisy) == pytest.approx(10 * np.log10(255**2 / 100), abs=0.1)


def test_long_clip_check_on_rendered_clips():
    """A rendered clip passes; played backwards, with a frame of another colour or shape, or with a
    step back of a few pixels, it fails on exactly that."""
    rng = np.random.default_rng(4)
    clip = synthetic.render_clip("blue", "square", "left", 12, 24, rng)
    assert long_video.check_clip(clip, "a blue square moving left")["all"]
    backwards = long_video.check_clip(clip[::-1], "a blue square moving left")
    assert backwards["color"] and backwards["shape"] and not backwards["monotonic"]
    recoloured = clip.copy()
    recoloured[5] = synthetic.render_clip("red", "square", "left", 12, 24, np.random.default_rng(4))[5]
    assert long_video.check_clip(recoloured, "a blue square moving left") == dict(
        color=False, shape=True, monotonic=True, all=False
    )
    jump = np.concatenate([clip[:6], clip[2:8]])  # back by 4 frames at the join, then on
    assert not long_video.check_clip(jump, "a blue square moving left")["monotonic"]
    with pytest.raises(ValueError, match="captions that move"):
        long_video.long_report(None, None, ["a red circle standing still"])


def test_demo_apps_without_a_demo_run_fails_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stiv_jax.apps.demo_apps", f"--demo={tmp_path}", f"--out={tmp_path / 'apps'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("demo-apps: error: --demo"), proc.stderr
    assert "make demo" in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "apps").exists()
