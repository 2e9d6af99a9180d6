"""Shard writer round trip: codecs/sizes/frame rates, bad files, scene split, filters, determinism."""

from __future__ import annotations

import filecmp
import os

import numpy as np
import pytest
from data_fixtures import (
    captions_jsonl,
    moving_clip,
    write_audio_only,
    write_bytes,
    write_png,
    write_rotated_mp4,
)
from PIL import Image

from stiv_jax.cli import make_shards as make_shards_cli
from stiv_jax.data import clips, shards, synthetic, video_io

# name -> (codec, container, height, width, fps, frames)
GOOD_VIDEOS = {
    "a/h264.mp4": ("libx264", "mp4", 48, 64, 12, 20),
    "a/vp9.webm": ("libvpx-vp9", "webm", 48, 48, 10, 15),
    "b/mpeg4.avi": ("mpeg4", "avi", 32, 64, 25, 30),
    "b/mjpeg.mov": ("mjpeg", "mov", 40, 56, 8, 10),
    "b/h264.mkv": ("libx264", "matroska", 36, 36, 30, 24),
}
BAD = {
    "bad/empty.mp4": "empty file",
    "bad/corrupt.mp4": "unreadable",
    "bad/audio_only.mp4": "no video stream (streams: audio)",
    "bad/notes.mkv": "unreadable",
    "bad/truncated.mp4": "unreadable",
    "bad/garbage.png": "unreadable image",
    "uncaptioned.mp4": "no caption",
}


def two_scenes(fps: int) -> np.ndarray:
    dark = moving_clip(16, 48, seed=1, motion="right")
    bright = np.clip(moving_clip(16, 48, seed=2, motion="down").astype(int) + 150, 0, 255).astype(np.uint8)
    return np.concatenate([dark, bright])


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("media"))
    caps = {}
    for i, (name, (codec, fmt, h, w, fps, t)) in enumerate(GOOD_VIDEOS.items()):
        frames = synthetic.render_clip("red", "circle", "left", t, max(h, w), np.random.default_rng(i))[:, :h, :w]
        write_bytes(os.path.join(root, name), video_io.encode_video(frames, fps, codec=codec, container_format=fmt))
        caps[name] = f"caption of {name}"
    write_rotated_mp4(os.path.join(root, "rotated.mp4"), moving_clip(12, 48, 3)[:, :32], fps=8, rotation=90)
    caps["rotated.mp4"] = "a rotated phone video"
    write_bytes(os.path.join(root, "cuts.mp4"), video_io.encode_video(two_scenes(8), 8))
    caps["cuts.mp4"] = "two scenes"
    write_bytes(os.path.join(root, "still.mp4"), video_io.encode_video(moving_clip(16, 40, 5, "still"), 8))
    caps["still.mp4"] = "nothing moves"
    write_png(os.path.join(root, "img/picture.png"), moving_clip(1, 40, 4)[0][:, :30])
    write_bytes(os.path.join(root, "img/picture.txt"), b"a caption from a text file\n")
    # Bad inputs.
    good = open(os.path.join(root, "a/h264.mp4"), "rb").read()
    write_bytes(os.path.join(root, "bad/empty.mp4"), b"")
    write_bytes(os.path.join(root, "bad/corrupt.mp4"), np.random.default_rng(0).bytes(4096))
    write_audio_only(os.path.join(root, "bad/audio_only.mp4"))
    write_bytes(os.path.join(root, "bad/notes.mkv"), b"this is a text file, not a video\n" * 20)
    write_bytes(os.path.join(root, "bad/truncated.mp4"), good[: len(good) // 2])
    write_bytes(os.path.join(root, "bad/garbage.png"), b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    write_bytes(os.path.join(root, "uncaptioned.mp4"), good)
    for name in BAD:
        if name != "uncaptioned.mp4":
            caps[name] = "never used"
    write_bytes(os.path.join(root, "readme.md"), b"ignored: not media")
    captions_jsonl(os.path.join(root, "captions.jsonl"), caps)
    return root


@pytest.fixture(scope="module")
def written(source_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards"))
    lines = []
    manifest = make_shards_cli.make_shards(
        source_dir, out, os.path.join(source_dir, "captions.jsonl"), records_per_shard=3, log=lines.append
    )
    return out, manifest, lines


def test_counts_and_skip_reasons(written):
    out, manifest, lines = written
    # 5 codecs + rotated + still + 2 scenes of cuts.mp4 + 1 image.
    assert manifest["num_records"] == 10
    assert manifest["num_skipped"] == len(BAD)
    assert manifest["kinds"] == {"video": 9, "image": 1}
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(BAD)
    for name, reason in BAD.items():
        assert reason in skipped[name], (name, skipped[name])
        assert any(line.startswith(f"skipped {name}: ") for line in lines)
    assert [s["records"] for s in manifest["shards"]] == [3, 3, 3, 1]
    assert sum(manifest["motion_histogram"]["counts"]) == 9
    assert manifest["motion_histogram"]["counts"][0] == 1  # the still clip


def test_good_clips_decode_to_the_right_frames(written, source_dir):
    out, _, _ = written
    records = shards.read_records(out)
    index = shards.load_index(out)
    assert [r["key"] for r in records] == list(range(len(records))) == index["key"].tolist()
    by_source = {}
    for rec in records:
        by_source.setdefault(rec["source"], []).append(rec)
        if rec["kind"] == "image":
            assert video_io.decode_image(rec["data"]).shape == (1, rec["height"], rec["width"], 3)
            continue
        frames = video_io.decode_video(rec["data"])
        assert frames.shape == (rec["num_frames"], rec["height"], rec["width"], 3)
        row = index[rec["key"]]
        assert (row["num_frames"], row["height"], row["width"]) == frames.shape[:3]
    for name, (_codec, _fmt, h, w, fps, t) in GOOD_VIDEOS.items():
        (rec,) = by_source[name]
        assert (rec["num_frames"], rec["height"], rec["width"]) == (t, h, w)
        assert rec["fps"] == pytest.approx(fps)
        assert rec["caption"] == f"caption of {name}"
        with open(os.path.join(source_dir, name), "rb") as f:
            assert rec["data"] == f.read()  # single-scene files are stored as they are
    (rot,) = by_source["rotated.mp4"]
    assert (rot["height"], rot["width"], rot["rotation"]) == (48, 32, 90)  # stored 32x48, shown 48x32
    assert by_source["img/picture.png"][0]["caption"] == "a caption from a text file"


def test_rotation_is_applied_on_decode(written, source_dir):
    out, _, _ = written
    (rec,) = [r for r in shards.read_records(out) if r["source"] == "rotated.mp4"]
    stored = moving_clip(12, 48, 3)[:, :32]  # [T, 32 rows, 48 cols] as encoded
    decoded = video_io.decode_video(rec["data"]).astype(float)
    expected = np.rot90(stored, k=1, axes=(1, 2)).astype(float)  # 90 deg counter-clockwise
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).mean() < 4.0
    assert np.abs(decoded - np.rot90(stored, k=-1, axes=(1, 2))).mean() > 10.0
    resized = video_io.decode_video(rec["data"], [0, 5], size=(24, 16)).astype(float)  # display size
    small = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((16, 24), Image.Resampling.BOX))
            for f in expected[[0, 5]].astype(np.uint8)
        ]
    )
    assert resized.shape == (2, 24, 16, 3) and np.abs(resized - small).mean() < 6.0


def test_scene_split(written):
    out, _, _ = written
    scenes = sorted((r for r in shards.read_records(out) if r["source"] == "cuts.mp4"), key=lambda r: r["start_frame"])
    assert [(r["start_frame"], r["num_frames"]) for r in scenes] == [(0, 16), (16, 16)]
    means = [video_io.decode_video(r["data"]).mean() for r in scenes]
    expected = two_scenes(8)
    # Two lossy encodes (source, then the re-encoded scene) shift the mean by a few levels.
    assert means[0] == pytest.approx(expected[:16].mean(), abs=6)
    assert means[1] == pytest.approx(expected[16:].mean(), abs=6)


def test_rerun_is_byte_identical_with_workers(written, source_dir, tmp_path):
    out, _, _ = written
    make_shards_cli.make_shards(
        source_dir,
        str(tmp_path),
        os.path.join(source_dir, "captions.jsonl"),
        records_per_shard=3,
        num_workers=2,
        log=lambda _: None,
    )
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(tmp_path))
    match, mismatch, errors = filecmp.cmpfiles(out, str(tmp_path), names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names) == 6  # 4 shards, index, manifest


def test_cli_prints_summary_and_filters(source_dir, tmp_path, capsys):
    make_shards_cli.run(
        [
            f"--input={source_dir}",
            f"--out={tmp_path}",
            f"--captions={source_dir}/captions.jsonl",
            "--min_duration=1.5",
            "--min_motion=0.001",
            "--min_resolution=36",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    skipped = dict(line[len("skipped ") :].split(": ", 1) for line in out if line.startswith("skipped "))
    expected = {
        "b/mjpeg.mov": "duration 1.25s < min_duration=1.5",  # 10 frames at 8 fps
        "b/h264.mkv": "duration 0.80s < min_duration=1.5",
        "b/mpeg4.avi": "resolution 32x64: shorter side 32 < min_resolution=36",
        "rotated.mp4": "resolution 48x32: shorter side 32 < min_resolution=36",
        "img/picture.png": "resolution 40x30: shorter side 30 < min_resolution=36",
        "still.mp4": "motion 0.0001 < min_motion=0.001",  # H.264 noise around the shape
    }
    assert skipped == {**expected, **{k: skipped[k] for k in BAD}}
    # Left: h264.mp4 (1.67 s), vp9.webm (1.5 s) and the two 2 s scenes of cuts.mp4.
    assert out[-1] == f"written=4 skipped={len(BAD) + len(expected)}"


def test_bad_captions_file_names_the_line(source_dir, tmp_path):
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"video": "a/h264.mp4", "caption": "ok"}\n{"video": "x.mp4"}\n')
    with pytest.raises(ValueError, match=r"caps.jsonl:2"):
        clips.load_captions(str(bad))
