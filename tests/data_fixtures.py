"""Media files and shard folders shared by the data tests, built once per test process.

Everything is tiny (32-64 px, <= 40 frames) and written with PyAV, so the tests exercise the real
codecs. ``coded_frames`` makes frames whose pixels say where they came from: green encodes the
source frame index and red/blue are horizontal/vertical ramps, so a sampled clip reveals its
frame stride and crop offsets independently of the code that sampled it.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import shutil
import tempfile
from fractions import Fraction

import av
import numpy as np

from stiv_jax.data import clips, synthetic, video_io
from stiv_jax.data.ingest import make_shards

ROOT = tempfile.mkdtemp(prefix="stiv_data_tests_")
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)

CODE_BASE, CODE_STEP = 16, 6  # green level of frame t: 16 + 6 t


def coded_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """``uint8 [T, H, W, 3]``: R = x ramp 0..255, G = frame code, B = y ramp 0..255."""
    x = np.round(np.linspace(0, 255, width))[None, :].repeat(height, 0)
    y = np.round(np.linspace(0, 255, height))[:, None].repeat(width, 1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[..., 0], frames[..., 2] = x, y
    frames[..., 1] = (CODE_BASE + CODE_STEP * np.arange(num_frames))[:, None, None]
    return frames


def decode_codes(video: np.ndarray) -> np.ndarray:
    """Source frame index of each frame of a ``[T, H, W, 3]`` clip in [-1, 1]."""
    green = (video[..., 1].mean(axis=(1, 2)) + 1) * 127.5
    return np.round((green - CODE_BASE) / CODE_STEP).astype(int)


def lossless_video(frames: np.ndarray, fps: float) -> bytes:
    return video_io.encode_video(frames, fps, codec="ffv1", container_format="matroska", pix_fmt="bgr0")


def write_bytes(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_png(path: str, frame: np.ndarray) -> str:
    return write_bytes(path, video_io.encode_png(frame))


def write_audio_only(path: str, seconds: float = 0.5) -> str:
    """An mp4 with a single AAC stream (a sine tone) and no video."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.sin(np.arange(int(16000 * seconds)) * 0.1).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return write_bytes(path, buf.getvalue())


def write_rotated_mp4(path: str, frames: np.ndarray, fps: int, rotation: int) -> str:
    """H.264 mp4 of ``frames`` (as stored) with a display-matrix rotation (ccw degrees)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(rotation)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return write_bytes(path, buf.getvalue())


def moving_clip(num_frames: int, size: int, seed: int, motion: str = "right") -> np.ndarray:
    return synthetic.render_clip("yellow", "square", motion, num_frames, size, np.random.default_rng(seed))


@functools.cache
def demo_dir() -> str:
    """A small demo dataset: 20 clips of 12 frames, 32x32, 8 fps."""
    out = os.path.join(ROOT, "demo")
    synthetic.make_demo_data(out, num_videos=20, seed=0, size=32, num_frames=12, fps=8.0)
    return out


@functools.cache
def demo_shards() -> str:
    out = os.path.join(ROOT, "demo_shards")
    make_shards(demo_dir(), out, os.path.join(demo_dir(), "captions.jsonl"), records_per_shard=8, log=lambda _: None)
    return out


# Coded sources: name -> (frames T, height, width) for videos, (1, height, width) for images.
CODED_SOURCES = {
    "v_wide.mkv": (40, 48, 64),
    "v_tall.mkv": (30, 64, 48),
    "v_square.mkv": (25, 40, 40),
    "v_short.mkv": (6, 32, 32),  # too short for 8 frames at stride 1: fits no video bucket
    "i_wide.png": (1, 48, 80),
    "i_square.png": (1, 60, 60),
}


@functools.cache
def coded_shards() -> str:
    """Shards of lossless coded videos and ramp images (captions from .txt files)."""
    src = os.path.join(ROOT, "coded_src")
    for name, (t, h, w) in CODED_SOURCES.items():
        frames = coded_frames(t, h, w)
        path = os.path.join(src, name)
        if name.endswith(".png"):
            write_png(path, frames[0])
        else:
            write_bytes(path, lossless_video(frames, fps=10))
        write_bytes(os.path.splitext(path)[0] + ".txt", f"a clip called {name.split('.')[0]}".encode())
    out = os.path.join(ROOT, "coded_shards")
    options = clips.CurationOptions(split_scenes=False)
    make_shards(src, out, None, options, records_per_shard=4, log=lambda _: None)
    return out


def captions_jsonl(path: str, entries: dict[str, str]) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps({"video": k, "caption": v}) + "\n" for k, v in entries.items())
    return path


def rewrite_shards(src: str, out: str, data: dict[int, bytes] | None = None) -> str:
    """A copy of shard folder ``src`` written record by record with ``ShardWriter`` (same shard
    size and index), with the ``data`` bytes of the records keyed in ``data`` replaced."""
    from stiv_jax.data import shards

    manifest = shards.load_manifest(src)
    index = shards.load_index(src)
    writer = shards.ShardWriter(out, "clips", manifest["shards"][0]["records"])
    for rec, row in zip(shards.read_records(src), index):
        key = rec.pop("key")
        rec["data"] = (data or {}).get(key, rec["data"])
        writer.write(rec, {name: row[name] for name in shards.INDEX_DTYPE.names})
    shards.write_manifest(out, {**manifest, "shards": writer.close()})
    return out


def corrupt_record_chunk(shard_dir: str, key: int) -> str:
    """Zeroes 8 bytes inside record ``key``'s chunk of its (uncompressed) shard file; returns the
    file. Reading that record then fails its chunk hash check; the other records still read."""
    from stiv_jax.data import shards

    data = shards.read_records(shard_dir)[key]["data"]
    snippet = data[len(data) // 2 : len(data) // 2 + 64]
    for path in shards.shard_paths(shard_dir):
        raw = bytearray(open(path, "rb").read())
        if raw.count(snippet) == 1:
            at = raw.find(snippet) + 16
            raw[at : at + 8] = bytes(8)
            write_bytes(path, bytes(raw))
            return path
    raise AssertionError(f"record {key}'s bytes not found once in {shard_dir}")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG (Pillow mode ``I;16``) of ``uint16 [H, W]`` values."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(values, np.uint16)).save(out, format="PNG")
    return out.getvalue()
