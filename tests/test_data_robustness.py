"""Hostile data: bad records in shards, 16-bit images, empty inputs, odd captions, CLI errors.

The console scripts run as real subprocesses (exit status, stdout and stderr as a user sees them).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
import pytest
from data_fixtures import (
    ROOT,
    corrupt_record_chunk,
    decode_codes,
    demo_dir,
    demo_shards,
    png16,
    rewrite_shards,
    write_bytes,
    write_png,
)
from PIL import Image
from test_data_pipeline import coded_config, demo_config, take

from stiv_jax.data import pipeline, shards, transforms, video_io
from stiv_jax.errors import UserError

SCRIPTS = Path(sys.executable).parent
BAD_KEY = {"garbage": 10, "corrupt": 5}  # demo records 0..19 in shards of 8


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STIV_VERBOSE"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run([str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=300, env=env)


def error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The single ``prog: error:`` line of a run that failed with a known error."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], proc.stderr
    assert lines[-1].startswith(f"{prog}: error: "), proc.stderr
    return lines[-1]


@functools.cache
def bad_shards(kind: str) -> str:
    """The demo shards with one bad record: undecodable video bytes, or a damaged chunk."""
    out = os.path.join(ROOT, f"bad_{kind}")
    if kind == "garbage":
        return rewrite_shards(demo_shards(), out, {BAD_KEY[kind]: b"not a video"})
    rewrite_shards(demo_shards(), out)
    corrupt_record_chunk(out, BAD_KEY[kind])
    return out


def test_bad_records_really_fail_to_read():
    """The premise: Grain raises on the damaged chunk; the garbage record fails to decode."""
    source = grain.sources.ArrayRecordDataSource(shards.shard_paths(bad_shards("corrupt")))
    with pytest.raises(RuntimeError, match="Corrupted Riegeli"):
        source[BAD_KEY["corrupt"]]
    source[BAD_KEY["corrupt"] + 1]  # the neighbours still read
    raw = grain.sources.ArrayRecordDataSource(shards.shard_paths(bad_shards("garbage")))[BAD_KEY["garbage"]]
    with pytest.raises(video_io.MediaError, match="key=10"):
        transforms.SampleClip(4, 24, 24, (1,), False, tokenizer=None)(raw)


@pytest.mark.parametrize("kind", ["garbage", "corrupt"])
def test_bad_record_is_skipped_counted_and_named(kind, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "_WARNED", set(), raising=False)  # warn again here
    cfg = demo_config(path=bad_shards(kind), num_epochs=1)
    with caplog.at_level(logging.WARNING):
        batches = list(pipeline.make_iterator(cfg, batch_size=4))
    assert len(batches) == 5 and all(b["video"].shape[0] == 4 for b in batches)  # full batches
    keys = np.concatenate([b["key"] for b in batches])
    skipped = np.concatenate([b["skipped"] for b in batches])
    assert skipped.dtype == np.int32 and skipped.sum() == 1
    assert BAD_KEY[kind] not in keys and set(keys) == set(range(20)) - {BAD_KEY[kind]}
    shard = shards.shard_paths(cfg.path)[BAD_KEY[kind] // 8]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"record key={BAD_KEY[kind]} in {shard}" in warnings[0], warnings
    assert ("MediaError" if kind == "garbage" else "chunk data hash mismatch") in warnings[0]


@pytest.mark.parametrize("kind", ["garbage", "corrupt"])
def test_stream_with_bad_records_is_deterministic_and_splits_over_processes(kind):
    cfg = demo_config(path=bad_shards(kind))
    one = take(pipeline.make_iterator(cfg, batch_size=4), 10)  # two epochs: the record comes back
    again = take(pipeline.make_iterator(cfg, batch_size=4), 10)
    halves = [take(pipeline.make_iterator(cfg, batch_size=4, rows=rows), 10) for rows in ([0, 1], [2, 3])]
    assert sum(int(b["skipped"].sum()) for b in one) == 2
    for whole, same, a, b in zip(one, again, *halves):
        for name in whole:
            np.testing.assert_array_equal(same[name], whole[name], err_msg=name)
            np.testing.assert_array_equal(np.concatenate([a[name], b[name]]), whole[name], err_msg=name)
    resumed = take(pipeline.make_iterator(cfg, batch_size=4, start=6), 4)
    for whole, got in zip(one[6:], resumed):
        for name in whole:
            np.testing.assert_array_equal(got[name], whole[name], err_msg=name)


def test_a_bucket_of_bad_records_stops_with_a_user_error(tmp_path):
    path = rewrite_shards(demo_shards(), str(tmp_path), dict.fromkeys(range(20), b"junk"))
    with pytest.raises(UserError, match=r"data.path=.* records in a row could not be read or decoded"):
        next(pipeline.make_iterator(demo_config(path=path), batch_size=2))


def test_empty_or_unfitting_shard_folder_is_a_user_error_naming_data_path(tmp_path):
    shards.ShardWriter(str(tmp_path), "clips").close()
    shards.write_manifest(str(tmp_path), {"format": pipeline.CLIP_FORMAT, "shards": [], "num_skipped": 3})
    with pytest.raises(UserError, match=rf"data.path={tmp_path}: the shard folder holds no records .*all 3 inputs"):
        pipeline.make_dataset(demo_config(path=str(tmp_path)))
    with pytest.raises(UserError, match=r"data.path=.*: no records fit the configured buckets"):
        pipeline.make_dataset(demo_config(num_frames=64))


# The streams of the coded and demo fixtures as they were before bad records could be skipped:
# per batch, rows "key:crop_top:crop_left:stride[:first source frame]" (-1: an image).
CLEAN_STREAMS = {
    "coded": (
        dict(),
        2,
        None,
        0,
        (
            "3:0:0:3:3 4:7:0:3:3 | 5:5:0:4:0 5:1:0:2:3 | 0:0:0:1:-1 1:0:15:1:-1 | 4:9:0:3:2 3:0:0:3:0 | "
            "2:0:0:3:-1 1:0:18:1:-1 | 0:0:0:1:-1 2:0:0:4:-1 | 4:4:0:4:0 3:0:0:2:9 | 5:2:0:1:25 5:1:0:2:13 | "
            "1:0:18:1:-1 0:0:0:1:-1 | 4:6:0:4:0 3:0:0:2:1 | 2:0:0:2:-1 1:0:11:1:-1 | 2:0:0:1:-1 0:0:0:1:-1"
        ),
    ),
    "coded_seed1": (
        dict(seed=1),
        3,
        None,
        0,
        (
            "3:0:0:1:17 4:7:0:1:0 4:6:0:3:4 | 5:0:0:2:6 5:5:0:4:11 5:5:0:2:25 | 2:0:0:2:-1 0:0:0:1:-1 1:0:13:1:-1 | "
            "3:0:0:2:9 3:0:0:2:5 4:1:0:4:1 | 0:0:0:1:-1 2:0:0:1:-1 1:0:12:1:-1 | 1:0:2:1:-1 0:0:0:1:-1 2:0:0:4:-1"
        ),
    ),
    "demo": (
        None,
        4,
        None,
        0,
        (
            "0:0:0:3 18:0:0:2 19:0:0:3 10:0:0:3 | 2:0:0:2 15:0:0:2 13:0:0:2 16:0:0:2 | 4:0:0:1 14:0:0:3 12:0:0:2 "
            "17:0:0:3 | 3:0:0:3 5:0:0:3 6:0:0:1 9:0:0:3 | 7:0:0:2 11:0:0:1 1:0:0:2 8:0:0:1 | 10:0:0:1 11:0:0:1 "
            "0:0:0:1 5:0:0:1 | 15:0:0:3 1:0:0:2 2:0:0:1 8:0:0:3 | 6:0:0:3 17:0:0:2 12:0:0:3 14:0:0:2 | "
            "18:0:0:2 9:0:0:3 19:0:0:3 13:0:0:3 | 4:0:0:1 3:0:0:2 16:0:0:3 7:0:0:1"
        ),
    ),
    "demo_rows": (
        None,
        4,
        [1, 3],
        2,
        (
            "14:0:0:3 17:0:0:3 | 5:0:0:3 9:0:0:3 | 11:0:0:1 8:0:0:1 | 11:0:0:1 5:0:0:1 | 1:0:0:2 8:0:0:3 | "
            "17:0:0:2 14:0:0:2"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CLEAN_STREAMS))
def test_clean_stream_is_unchanged(name):
    overrides, batch_size, rows, start, expected = CLEAN_STREAMS[name]
    cfg = demo_config() if overrides is None else coded_config(**overrides)
    want = [batch.split() for batch in expected.split(" | ")]
    it = pipeline.make_iterator(cfg, batch_size=batch_size, rows=rows, start=start)
    for k, batch in enumerate(take(it, len(want))):
        got = []
        for video, micro, key in zip(batch["video"], batch["micro"], batch["key"]):
            row = f"{int(key)}:{int(micro[2])}:{int(micro[3])}:{int(micro[4])}"
            if overrides is not None:
                row += f":{decode_codes(video)[0] if video.shape[0] > 1 else -1}"
            got.append(row)
        assert got == want[k], f"batch {k}"
        assert not np.any(batch.get("skipped", 0))


def gradient16(height: int = 32, width: int = 64) -> np.ndarray:
    return np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)


def assert_8bit_of(decoded: np.ndarray, values: np.ndarray) -> None:
    assert decoded.shape == (1, *values.shape, 3) and decoded.dtype == np.uint8
    for c in range(3):
        assert np.abs(decoded[0, ..., c].astype(int) - (values.astype(int) >> 8)).max() <= 1


def test_16bit_png_decodes_to_its_high_byte():
    raw = png16(gradient16())
    assert Image.open(io.BytesIO(raw)).mode == "I;16"
    assert_8bit_of(video_io.decode_image(raw), gradient16())
    assert video_io.decode_image(raw, size=(16, 32))[0].max() > 200  # resized, still not white
    assert video_io.decode_image(raw, size=(16, 32))[0].min() < 50


def test_16bit_png_through_make_shards(tmp_path):
    write_bytes(str(tmp_path / "in" / "deep.png"), png16(gradient16()))
    (tmp_path / "in" / "deep.txt").write_text("a grey ramp")
    proc = run_cli("stiv-make-shards", f"--input={tmp_path / 'in'}", f"--out={tmp_path / 'out'}")
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "written=1 skipped=0", proc.stderr
    (record,) = shards.read_records(str(tmp_path / "out"))
    assert_8bit_of(video_io.decode_image(record["data"]), gradient16())


def test_make_shards_that_writes_nothing_fails_with_one_line(tmp_path):
    write_bytes(str(tmp_path / "in" / "broken.mp4"), b"not a video at all")
    (tmp_path / "in" / "broken.txt").write_text("a caption")
    (tmp_path / "in" / "nocaption.png").write_bytes(b"")
    out = tmp_path / "out"
    proc = run_cli("stiv-make-shards", f"--input={tmp_path / 'in'}", f"--out={out}")
    line = error_line(proc, "stiv-make-shards")
    assert f"nothing written to {out}: none of the 2 input files gave a clip (2 skipped, the first: broken.mp4" in line
    assert "the 'skipped' lines above give each reason" in line
    assert "skipped broken.mp4: unreadable" in proc.stdout and "skipped nocaption.png: no caption" in proc.stdout
    assert not out.exists()  # nothing misleading: no manifest, no empty index
    (tmp_path / "empty").mkdir()
    line = error_line(run_cli("stiv-make-shards", f"--input={tmp_path / 'empty'}", f"--out={out}"), "stiv-make-shards")
    assert f"nothing written to {out}: no videos or images" in line and not out.exists()


def test_captions_latin1_txt_bom_jsonl_and_missing_files(tmp_path):
    src = tmp_path / "in"
    write_png(str(src / "latin.png"), np.full((8, 8, 3), 100, np.uint8))
    write_png(str(src / "listed.png"), np.full((8, 8, 3), 200, np.uint8))
    (src / "latin.txt").write_bytes("café crème, naïve façade".encode("latin-1"))
    entries = [{"video": "listed.png", "caption": "déjà vu"}] + [
        {"video": f"gone{i}.mp4", "caption": "x"} for i in range(7)
    ]
    captions = tmp_path / "captions.jsonl"
    captions.write_bytes("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8-sig"))
    proc = run_cli("stiv-make-shards", f"--input={src}", f"--out={tmp_path / 'out'}", f"--captions={captions}")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("written=2 skipped=0"), proc.stderr
    got = {r["source"]: r["caption"] for r in shards.read_records(str(tmp_path / "out"))}
    assert got == {"latin.png": "café crème, naïve façade", "listed.png": "déjà vu"}
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("stiv-make-shards: warning: ")]
    assert any(f"caption {src / 'latin.txt'} is not UTF-8" in w for w in warnings), proc.stderr
    assert any(
        "7 caption(s) in" in w and "gone0.mp4, gone1.mp4, gone2.mp4, gone3.mp4, gone4.mp4, …" in w for w in warnings
    ), proc.stderr


def test_malformed_captions_jsonl_is_one_line_naming_file_and_line(tmp_path):
    write_png(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"video": "a.png", "caption": "ok"}\n{"video": "a.png", "caption": \n')
    proc = run_cli("stiv-make-shards", f"--input={tmp_path / 'in'}", f"--out={tmp_path / 'out'}", f"--captions={bad}")
    assert f"stiv-make-shards: error: {bad}:2: expected" in error_line(proc, "stiv-make-shards")


def test_encode_shards_leaves_out_and_counts_a_bad_record(tmp_path):
    args = [
        "--autoencoder=pixel:4",
        f"--tokenizer_path={demo_dir()}/spm.model",
        "--max_text_length=10",
        "--buckets=4x16x16",
        "--frame_strides=1",
    ]
    proc = run_cli("stiv-encode-shards", f"--input={bad_shards('garbage')}", f"--out={tmp_path}", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "encoded=19 skipped=1 shapes={'4x4x4x48': 19}"
    manifest = json.loads((tmp_path / shards.MANIFEST).read_text())
    assert manifest["num_records"] == 19 and manifest["num_skipped"] == 1
    (entry,) = manifest["skipped"]
    shard = shards.shard_paths(bad_shards("garbage"))[1]
    assert entry["key"] == 10 and entry["reason"].startswith(f"record key=10 in {shard}: MediaError")
    assert 10 not in {r["source_key"] for r in shards.read_records(str(tmp_path))}
    proc = run_cli("stiv-encode-shards", f"--input={tmp_path / 'nowhere'}", f"--out={tmp_path / 'x'}", *args)
    assert "not a shard folder" in error_line(proc, "stiv-encode-shards")
