"""Multi-view generation (App. J.3, issue 27 item 4): the orbit dataset through its console script,
a tiny multi-view run (front view given, zero-latent null image) sampled through the library and
``stiv-sample --task=multiview``, and the measurements on analytic cases."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stiv_jax.apps import multiview
from stiv_jax.apps.report import psnr
from stiv_jax.data import orbits, video_io
from stiv_jax.sampling import pipeline
from tests.train_utils import demo_tokenizer, tiny_train_config
from tests.train_utils import run as train

V, R = 7, 16
BIN = os.path.dirname(sys.executable)
FAST = ["--steps=3", "--emulated_steps=10"]


def test_orbit_dataset_through_the_console_script(tmp_path):
    out = tmp_path / "orbits"
    cmd = [os.path.join(BIN, "stiv-make-demo-data"), "--kind=orbits", f"--out={out}", "--num_videos=3", "--size=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"wrote 3 object orbits and {out}/captions.jsonl"
    entries = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [e["caption"] for e in entries] == ["", "", ""] and not (out / "spm.model").exists()
    for entry in entries:
        solids = [orbits.Solid(s["kind"], tuple(s["center"]), s["size"], s["color"]) for s in entry["object"]]
        frames = video_io.decode_video(str(out / entry["video"]))
        assert frames.shape == (V, 32, 32, 3)
        for k in range(V):  # frame k is the view at azimuth 360° k / 7 (up to H.264)
            assert psnr(frames[k], orbits.render_view(solids, 360.0 * k / V, 32)) > 28
        assert (
            psnr(frames[3], orbits.render_view(solids, 0.0, 32))
            < psnr(frames[0], orbits.render_view(solids, 0.0, 32)) - 3
        )
    bad = subprocess.run([*cmd[:3], "--num_videos=0"], capture_output=True, text=True, timeout=120)
    lines = bad.stderr.splitlines()
    assert bad.returncode == 2 and lines == ["stiv-make-demo-data: error: --num_videos must be >= 1, got 0"], bad.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny multi-view run: 7-frame clips, the first given, zero latents as the null image."""
    root = tmp_path_factory.mktemp("multiview")
    config = tiny_train_config(
        num_train_steps=2,
        null_image="zeros",
        **{
            "data.tokenizer_path": demo_tokenizer(root),
            "model.temporal_patch_size": 1,
            "tasks.t2v": 0.0,
            "tasks.ti2v": 0.0,
            "tasks.multiview": 1.0,
            "data.num_frames": V,
        },
    )
    assert np.isfinite(train(config, str(root / "run"))["loss"])
    return str(root / "run")


def test_multiview_keeps_the_front_view_and_is_measured(run):
    sampler = pipeline.load_sampler(run, log=lambda m: None)
    report = multiview.multiview_report(sampler, count=2, seed=1, scales=(1.0,), batch=2)
    truth, views = report.pop("truth_videos"), report.pop("multiview_videos")
    assert truth.shape == views.shape == (2, V, R, R, 3)
    np.testing.assert_array_equal(views[:, 0], truth[:, 0])  # lossless pixel autoencoder: exactly
    assert report["given_kept"] and not np.array_equal(views[:, 1], views[:, 0])
    assert set(report["model"]) == {f"s{report['scale']:g}", "s1"} and report["scale"] != 1.0
    for scores in (*report["model"].values(), report["copy_front"]):
        assert len(scores["psnr_db_per_view"]) == len(scores["ssim_per_view"]) == V - 1
        assert np.isfinite(scores["psnr_db"]) and -1 <= scores["ssim"] <= 1
    again = sampler.generate([""] * 2, task="multiview", image=truth[:, 0], seed=1, batch_size=2, steps=3)
    np.testing.assert_array_equal(
        again, sampler.generate([""] * 2, task="multiview", image=truth[:, 0], seed=1, batch_size=2, steps=3)
    )


def test_stiv_sample_multiview_writes_the_views_side_by_side(run, tmp_path):
    front = orbits.render_view(orbits.orbit_objects(1, 5)[0], 0.0, R)
    Image.fromarray(front).save(tmp_path / "front.png")
    out = tmp_path / "views.png"
    base = [os.path.join(BIN, "stiv-sample"), f"--workdir={run}", "--task=multiview", *FAST]
    proc = subprocess.run(
        [*base, f"--image={tmp_path / 'front.png'}", f"--out={out}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out)]
    strip = np.asarray(Image.open(out))
    assert strip.shape == (R, V * R, 3)
    np.testing.assert_array_equal(strip[:, :R], front)  # the given view, exactly
    assert not np.array_equal(strip[:, R : 2 * R], front)
    proc = subprocess.run([*base, f"--out={tmp_path / 'x.mp4'}"], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and lines == ["stiv-sample: error: task 'multiview' needs image (--image)"], proc.stderr


def test_view_scores_and_the_copy_baseline():
    config = tiny_train_config(**{"data.num_frames": V, "data.resolution": 24})
    truth = multiview.real_orbits(config, 3, seed=7)
    assert truth.shape == (3, V, 24, 24, 3)
    np.testing.assert_array_equal(truth, multiview.real_orbits(config, 3, seed=7))  # deterministic
    perfect = multiview.view_scores(truth, truth)
    assert perfect["psnr_db"] == 200.0 and perfect["ssim"] == pytest.approx(1.0, abs=1e-12)
    copy = multiview.view_scores(truth, multiview.copy_front(truth))
    assert copy["psnr_db"] < 40 and copy["ssim"] < 0.99
    # The back view (most rotated) is the hardest to copy: worse than the nearest views.
    assert copy["psnr_db_per_view"][2] < max(copy["psnr_db_per_view"][0], copy["psnr_db_per_view"][-1])
