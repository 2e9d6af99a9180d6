"""Grain pipeline: shapes/dtypes, micro-conditions vs pixels, determinism, checkpoints, sharding."""

from __future__ import annotations

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from data_fixtures import CODED_SOURCES, coded_shards, decode_codes, demo_dir, demo_shards

from stiv_jax.data import config as data_config
from stiv_jax.data import pipeline, shards

L = 12


def demo_config(**overrides):
    cfg = data_config.get_data_config()
    cfg.path, cfg.tokenizer_path = demo_shards(), f"{demo_dir()}/spm.model"
    cfg.num_frames, cfg.resolution, cfg.max_text_length = 4, 24, L
    cfg.frame_strides = (1, 2, 3)
    cfg.read_threads = 1
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def coded_config(**overrides):
    cfg = demo_config(path=coded_shards(), buckets=((8, 32, 32), (8, 24, 40), (1, 32, 32)), frame_strides=(1, 2, 3, 4))
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_shapes_and_dtypes():
    batch = next(pipeline.make_iterator(demo_config(), batch_size=3))
    expected = {
        "video": ((3, 4, 24, 24, 3), np.float32),
        "text_ids": ((3, L), np.int32),
        "text_mask": ((3, L), np.bool_),
        "micro": ((3, 6), np.float32),
        "key": ((3,), np.int32),
        "skipped": ((3,), np.int32),  # bad records passed over (none here)
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert not batch["skipped"].any()
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    assert batch["video"].min() < -0.8 and batch["video"].max() > 0.5  # dark background, bright shape
    # The tokens are the caption's: decode them back through SentencePiece.
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=f"{demo_dir()}/spm.model")
    records = {r["key"]: r for r in shards.read_records(demo_shards())}
    for ids, mask, key in zip(batch["text_ids"], batch["text_mask"], batch["key"]):
        assert ids[mask.sum() - 1] == 1  # EOS last
        assert sp.decode(ids[: mask.sum() - 1].tolist()) == records[int(key)]["caption"]


def test_micro_conditions_are_what_was_sampled():
    """Frame codes and colour ramps in the pixels must agree with the reported micro-conditions."""
    index = shards.load_index(coded_shards())
    records = {r["key"]: r for r in shards.read_records(coded_shards())}
    it = pipeline.make_iterator(coded_config(), batch_size=2)
    seen_strides, seen_buckets = set(), set()
    for batch in take(it, 12):
        t, hh, ww = batch["video"].shape[1:4]
        seen_buckets.add((t, hh, ww))
        for video, micro, key in zip(batch["video"], batch["micro"], batch["key"]):
            rec = records[int(key)]
            orig_h, orig_w, top, left, stride, num_frames = micro
            assert (orig_h, orig_w) == (rec["height"], rec["width"]) == (index[key]["height"], index[key]["width"])
            assert num_frames == t
            if rec["kind"] == "image":
                assert t == 1 and stride == 1
            else:
                codes = decode_codes(video)
                assert np.all(np.diff(codes) == stride), (codes, micro)
                assert codes[0] >= 0 and codes[-1] < rec["num_frames"]
                seen_strides.add(int(stride))
            # Crop offsets, from the ramps at the centre column/row (ramps survive resizing exactly
            # away from the borders): resized coordinate = (source coordinate + 0.5) * scale - 0.5.
            scale = max(hh / orig_h, ww / orig_w)
            sy, sx = max(hh, round(orig_h * scale)) / orig_h, max(ww, round(orig_w * scale)) / orig_w
            x_src = (video[:, :, ww // 2, 0].mean() + 1) / 2 * (orig_w - 1)
            y_src = (video[:, hh // 2, :, 2].mean() + 1) / 2 * (orig_h - 1)
            assert abs((x_src + 0.5) * sx - 0.5 - ww // 2 - left) < 0.35, (x_src, micro)
            assert abs((y_src + 0.5) * sy - 0.5 - hh // 2 - top) < 0.35, (y_src, micro)
    assert len(seen_strides) > 1  # strides are really sampled
    assert seen_buckets == {(8, 32, 32), (8, 24, 40), (1, 32, 32)}


def test_bucket_assignment():
    index = shards.load_index(coded_shards())
    names = {r["key"]: r["source"] for r in shards.read_records(coded_shards())}
    assignment = pipeline.assign_pixel_buckets(index, [(8, 32, 32), (8, 24, 40), (1, 32, 32)], (1, 2))
    by_name = {names[k]: int(b) for k, b in enumerate(assignment)}
    # Wide video -> wide bucket; tall/square -> square; images -> T=1; 6 frames fit no T=8 bucket.
    assert by_name == {
        "v_wide.mkv": 1,
        "v_tall.mkv": 0,
        "v_square.mkv": 0,
        "v_short.mkv": 2,
        "i_wide.png": 2,
        "i_square.png": 2,
    }
    t2i = pipeline.assign_pixel_buckets(index, [(1, 32, 32)], (1,))
    assert np.all(t2i == 0)  # a T2I config also uses single frames of videos
    assert len(CODED_SOURCES) == len(index)


def test_same_seed_same_stream_and_other_seed_differs():
    a = take(pipeline.make_iterator(coded_config(), batch_size=2), 4)
    b = take(pipeline.make_iterator(coded_config(), batch_size=2), 4)
    c = take(pipeline.make_iterator(coded_config(seed=1), batch_size=2), 4)
    for x, y in zip(a, b):
        assert_batches_equal(x, y)
    same = [np.array_equal(x["key"], z["key"]) and np.array_equal(x["micro"], z["micro"]) for x, z in zip(a, c)]
    assert not all(same)


def test_epochs_reshuffle_and_cover():
    cfg = demo_config(num_epochs=2)
    keys = [int(k) for b in pipeline.make_iterator(cfg, batch_size=1) for k in b["key"]]
    n = len(shards.load_index(demo_shards()))
    assert len(keys) == 2 * n
    assert sorted(keys[:n]) == sorted(keys[n:]) == list(range(n))
    assert keys[:n] != keys[n:]


def test_processes_read_disjoint_rows_whose_union_is_the_one_process_stream():
    """Global batches of 4 read as rows {0, 1} and {2, 3} (two processes) or all rows (one)."""
    cfg = demo_config(num_epochs=1)
    one = list(pipeline.make_iterator(cfg, batch_size=4))
    halves = [list(pipeline.make_iterator(cfg, batch_size=4, rows=rows)) for rows in ([0, 1], [2, 3])]
    assert len(one) == len(halves[0]) == len(halves[1]) == len(shards.load_index(demo_shards())) // 4
    keys = [{int(k) for batch in part for k in batch["key"]} for part in halves]
    assert not keys[0] & keys[1]
    assert keys[0] | keys[1] == {int(k) for batch in one for k in batch["key"]}
    for whole, a, b in zip(one, *halves):  # row for row, random crops and strides included
        for name in whole:
            np.testing.assert_array_equal(np.concatenate([a[name], b[name]]), whole[name], err_msg=name)


def test_start_skips_whole_global_batches():
    cfg = coded_config()
    expected = take(pipeline.make_iterator(cfg, batch_size=2), 5)[3:]
    got = take(pipeline.make_iterator(cfg, batch_size=2, start=3), 2)
    for e, g in zip(expected, got):
        assert_batches_equal(e, g)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_orbax_checkpoint_resumes_the_exact_stream(tmp_path, num_workers):
    cfg = coded_config(num_workers=num_workers)
    k = 3
    it = pipeline.make_iterator(cfg, batch_size=2)
    take(it, k)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.save(k, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        expected = take(it, 2)
        if hasattr(it, "close"):
            it.close()
        restored = pipeline.make_iterator(cfg, batch_size=2)
        mngr.restore(k, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
        got = take(restored, 2)
        if hasattr(restored, "close"):
            restored.close()
    for e, g in zip(expected, got):
        assert_batches_equal(e, g)


def test_workers_match_in_process_stream():
    a = take(pipeline.make_iterator(coded_config(num_workers=0), batch_size=2), 3)
    it = pipeline.make_iterator(coded_config(num_workers=2), batch_size=2)
    b = take(it, 3)
    it.close()
    for x, y in zip(a, b):
        assert_batches_equal(x, y)


def test_config_errors_name_the_key():
    cfg = data_config.get_data_config()
    with pytest.raises(AttributeError):
        cfg.not_a_key = 1
    with pytest.raises(ValueError, match="data.path"):
        pipeline.make_dataset(cfg)
    with pytest.raises(ValueError, match="stiv-encode-shards"):
        pipeline.make_dataset(demo_config(mode="latents"))
    with pytest.raises(ValueError, match="data.tokenizer_path"):
        pipeline.make_dataset(demo_config(tokenizer_path=""))
    with pytest.raises(ValueError, match="no records fit"):
        pipeline.make_dataset(demo_config(num_frames=64))
