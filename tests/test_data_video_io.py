"""PyAV/Pillow I/O: encode/decode round trips, probing, strided decode, writers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import coded_frames, decode_codes, lossless_video, moving_clip, write_audio_only

from stiv_jax.data import video_io


@pytest.mark.parametrize(
    "codec,fmt,codec_name",
    [("libx264", "mp4", "h264"), ("libvpx-vp9", "webm", "vp9"), ("mpeg4", "avi", "mpeg4"), ("mjpeg", "mov", "mjpeg")],
)
def test_encode_probe_decode_round_trip(codec, fmt, codec_name):
    frames = moving_clip(10, 48, seed=0)[:, :, :40]
    data = video_io.encode_video(frames, 12.5, codec=codec, container_format=fmt)
    info = video_io.probe(data)
    assert (info.height, info.width, info.num_frames, info.codec) == (48, 40, 10, codec_name)
    assert info.fps == pytest.approx(12.5) and info.duration == pytest.approx(0.8)
    decoded = video_io.decode_video(data)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    # Lossy codecs: mean error 2.4 (h264) … 4.0 (mjpeg) on this clip; each decoded frame is much
    # closer to its own source frame than to the neighbouring one (7.7 … 9.2), so order is kept.
    error = np.abs(decoded.astype(float) - frames).mean()
    assert error < 5.0 and error < 0.6 * np.abs(decoded.astype(float) - np.roll(frames, 1, axis=0)).mean()
    assert data == video_io.encode_video(frames, 12.5, codec=codec, container_format=fmt)  # bit-exact


def test_decode_selected_frames_resized():
    data = lossless_video(coded_frames(20, 32, 48), fps=10)
    out = video_io.decode_video(data, indices=[3, 7, 11, 3], size=(16, 24))
    assert out.shape == (4, 16, 24, 3)
    np.testing.assert_array_equal(decode_codes(out.astype(np.float32) / 127.5 - 1), [3, 7, 11, 3])
    with pytest.raises(video_io.MediaError, match="wanted frame"):
        video_io.decode_video(data, indices=[5, 25])


def test_odd_sizes_are_cropped_to_even():
    data = video_io.encode_video(moving_clip(4, 33, seed=1)[:, :33, :31], 8)
    assert video_io.probe(data).height == 32 and video_io.probe(data).width == 30


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webm"])
def test_write_video(tmp_path, ext):
    frames = moving_clip(6, 32, seed=2)
    path = video_io.write_video(tmp_path / f"clip{ext}", frames, fps=8)
    decoded = video_io.decode_video(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 6.0  # gif: 256-colour palette


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unsupported extension"):
        video_io.write_video(tmp_path / "x.avi", moving_clip(2, 16, 0), 8)
    with pytest.raises(TypeError, match="uint8"):
        video_io.write_video(tmp_path / "x.mp4", moving_clip(2, 16, 0).astype(np.float32), 8)


def test_images_round_trip_and_exif_orientation():
    frame = coded_frames(1, 20, 30)[0]
    assert np.array_equal(video_io.decode_image(video_io.encode_png(frame))[0], frame)
    import io

    from PIL import Image

    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    Image.fromarray(frame).save(buf, format="JPEG", exif=exif, quality=95)
    shown = video_io.decode_image(buf.getvalue())[0]
    assert shown.shape == (30, 20, 3)
    assert np.abs(shown.astype(float) - np.rot90(frame, k=-1)).mean() < 6.0


def test_bad_media_raise_media_error(tmp_path):
    with pytest.raises(video_io.MediaError, match="InvalidDataError"):
        video_io.probe(b"definitely not a video" * 10)
    with pytest.raises(video_io.MediaError, match=r"no video stream \(streams: audio\)"):
        video_io.probe(write_audio_only(str(tmp_path / "a.mp4")))
    with pytest.raises(video_io.MediaError, match="unreadable image"):
        video_io.decode_image(b"GIF89a broken")
