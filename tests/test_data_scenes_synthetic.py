"""Cut detection, motion score, and the synthetic demo dataset (rendering, captions, tokenizer)."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest
from data_fixtures import demo_dir, moving_clip

from stiv_jax.cli import make_demo_data as make_demo_data_cli
from stiv_jax.data import scenes, synthetic, video_io


def luma(frames: np.ndarray) -> np.ndarray:
    return np.round(frames.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def texture_pan(num_frames: int, shift: int) -> np.ndarray:
    """A high-contrast texture sliding sideways: big frame differences everywhere, but no cut."""
    tex = np.random.default_rng(0).integers(0, 255, (32, 32 + shift * num_frames)).astype(np.uint8)
    return np.stack([tex[:, t * shift : t * shift + 32] for t in range(num_frames)])


def test_detect_cuts():
    a = luma(moving_clip(20, 32, 1, "right"))
    b = np.clip(luma(moving_clip(14, 32, 2, "up")).astype(int) + 140, 0, 255).astype(np.uint8)
    assert scenes.detect_cuts(np.concatenate([a, b])) == [20]
    assert scenes.detect_cuts(a) == []
    pan = texture_pan(24, 3)
    assert scenes.consecutive_differences(pan).min() > 30  # above the threshold at every frame...
    assert scenes.detect_cuts(pan) == []  # ...but steady, so not a cut
    flash = np.concatenate([a[:10], b[:2], a[10:]])  # two bright frames: shorter than a scene
    assert scenes.detect_cuts(flash) == [10]


def test_split_ranges():
    assert scenes.split_ranges(30, [10, 25]) == [(0, 10), (10, 25), (25, 30)]
    assert scenes.split_ranges(30, [], max_frames=12) == [(0, 12), (12, 24), (24, 30)]


def test_motion_score_orders_clips_and_ignores_frame_rate():
    still = scenes.motion_score(luma(moving_clip(16, 32, 3, "still")), fps=8)
    slow = scenes.motion_score(luma(moving_clip(16, 32, 3, "left")), fps=8)
    # Same path in the same time at twice the frame rate: per-1/4-s change is the same.
    rng = np.random.default_rng(3)
    fast_fps = scenes.motion_score(luma(synthetic.render_clip("yellow", "square", "left", 31, 32, rng)), fps=16)
    pan = scenes.motion_score(texture_pan(16, 3), fps=8)
    assert still == 0.0
    assert 0.0 < slow < pan
    assert fast_fps == pytest.approx(slow, rel=0.2)
    hist = scenes.motion_histogram([still, slow, pan])
    assert sum(hist["counts"]) == 3 and hist["counts"][0] == 1


def shape_mask(frames: np.ndarray, color: str) -> np.ndarray:
    return np.abs(frames.astype(int) - synthetic.COLORS[color]).sum(-1) < 60


@pytest.mark.parametrize("motion,axis,sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_render_clip_moves_as_captioned(motion, axis, sign):
    frames = synthetic.render_clip("blue", "triangle", motion, 12, 48, np.random.default_rng(0))
    assert frames.shape == (12, 48, 48, 3) and frames.dtype == np.uint8
    masks = shape_mask(frames, "blue")
    centroids = np.array([np.argwhere(m).mean(0) for m in masks])
    steps = np.diff(centroids[:, axis])
    assert np.all(sign * steps > 0.5)  # constant direction, at least half a pixel per frame
    assert np.abs(np.diff(centroids[:, 1 - axis])).max() < 0.2
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()  # stays inside


def test_moving_paths_start_at_the_centre_whatever_the_direction():
    """Frame 0 carries no hint of the direction (only the caption does): over many clips every
    direction starts within START_JITTER (+ antialiasing) of the centre on its moving axis."""
    size = 64
    for motion, axis in (("left", 1), ("right", 1), ("up", 0), ("down", 0)):
        rng = np.random.default_rng(3)
        starts = [np.argwhere(shape_mask(synthetic.render_clip("red", "circle", motion, 4, size, rng), "red")[0]).mean(0)[axis]
                  for _ in range(20)]  # fmt: skip
        assert np.abs(np.asarray(starts) + 0.5 - size / 2).max() < synthetic.START_JITTER + 0.5, motion


def test_shapes_and_still():
    # Same rng seed -> same radius and position for every shape; areas must differ as geometry says.
    areas = {
        s: shape_mask(synthetic.render_clip("red", s, "still", 3, 64, np.random.default_rng(5)), "red")[0].sum()
        for s in synthetic.SHAPES
    }
    assert areas["triangle"] < areas["square"] < areas["circle"]
    assert areas["circle"] / areas["triangle"] == pytest.approx(np.pi / (3 * np.sqrt(3) / 4), rel=0.1)
    still = synthetic.render_clip("green", "circle", "still", 8, 32, np.random.default_rng(1))
    assert np.array_equal(still[0], still[-1])
    assert still[0, 0, 0].max() < 40  # dark background


def test_demo_dataset_is_deterministic_and_correctly_captioned(tmp_path):
    a = demo_dir()
    make_demo_data_cli.run([f"--out={tmp_path}", "--num_videos=20", "--seed=0", "--size=32", "--num_frames=12"])
    files = ["captions.jsonl", "spm.model"] + [f"videos/{i:05d}.mp4" for i in range(20)]
    _, mismatch, errors = filecmp.cmpfiles(a, str(tmp_path), files, shallow=False)
    assert not mismatch and not errors
    entries = [json.loads(line) for line in open(os.path.join(a, "captions.jsonl"))]
    assert all(set(e) == {"video", "caption"} for e in entries)
    colors, shapes, motions = set(), set(), set()
    for e in entries:
        words = e["caption"].split()
        color, shape = words[1], words[2]
        motion = "still" if words[-1] == "still" else words[-1]
        colors.add(color), shapes.add(shape), motions.add(motion)
        frames = video_io.decode_video(os.path.join(a, e["video"]))
        assert frames.shape == (12, 32, 32, 3)
        centroids = np.array([np.argwhere(m).mean(0) for m in shape_mask(frames, color)])
        dy, dx = centroids[-1] - centroids[0]
        observed = (
            "still"
            if max(abs(dx), abs(dy)) < 1
            else (("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up"))
        )
        assert observed == motion, e
    assert colors == set(synthetic.COLORS) and shapes == set(synthetic.SHAPES) and motions == set(synthetic.MOTIONS)


def test_demo_tokenizer_has_t5_ids_and_round_trips():
    import sentencepiece as spm

    from stiv_jax.text.tokenizer import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_file=os.path.join(demo_dir(), "spm.model"))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"] and sp.bos_id() == -1
    tok = T5Tokenizer(os.path.join(demo_dir(), "spm.model"), max_length=8)
    ids, mask = tok(["a yellow triangle moving up", "a purple star"])
    assert mask.sum(1)[0] == 6  # five words + EOS
    assert sp.decode(ids[0, :5].tolist()) == "a yellow triangle moving up" and ids[0, 5] == 1
    assert ids[1, 0] == ids[0, 0] and sp.unk_id() in ids[1].tolist()  # unseen words map to <unk>
