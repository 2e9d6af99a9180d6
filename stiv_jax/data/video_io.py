"""Video and image I/O on PyAV (bundled FFmpeg) and Pillow: probe, decode, encode, write.

Everything works on in-memory bytes as well as paths, so the same helpers serve the shard writer
(files on disk), the Grain workers (clip bytes read from ArrayRecord) and the sampler (writing
``.mp4``/``.gif``). Frames are ``uint8 [T, H, W, 3]`` RGB in display orientation: a container's
display-matrix rotation is applied on decode (``VideoFrame.rotation`` is counter-clockwise degrees).

Encoding is deterministic (needed for reproducible shards): one encoder thread, bit-exact flags,
explicit timestamps and no x264 macroblock-tree, so the same frames give the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import chex
import numpy as np
from PIL import Image, ImageOps

from stiv_jax.errors import UserError

Source = str | os.PathLike | bytes

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class MediaError(UserError):
    """A file that cannot be used as a clip; ``str(err)`` is a short human-readable reason."""


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """A video's size (display orientation), length, rate, rotation and codec."""

    height: int
    width: int
    num_frames: int
    fps: float
    rotation: int  # counter-clockwise degrees still to apply to decoded frames (0/90/180/270)
    codec: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _open(src: Source) -> av.container.InputContainer:
    return av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else os.fspath(src))


def _video_stream(container) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise MediaError(f"no video stream (streams: {', '.join(kinds) or 'none'})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _as_media_error(e: Exception) -> MediaError:
    """FFmpeg/OS error -> MediaError with a short reason (no file path, which callers add)."""
    message = getattr(e, "strerror", None) or str(e)
    return MediaError(f"{type(e).__name__}: {message}")


def stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def normalize_rotation(degrees: float | None) -> int:
    """Display rotation rounded to a multiple of 90 in [0, 360)."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def apply_rotation(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Rotates ``[H, W, C]`` counter-clockwise by ``rotation`` degrees (display orientation)."""
    k = normalize_rotation(rotation) // 90
    return np.ascontiguousarray(np.rot90(frame, k=k)) if k else frame


def iter_video_frames(src: Source) -> Iterator[tuple[int, av.VideoFrame, int]]:
    """Yields ``(index, frame, rotation)`` for every decodable frame; raises ``MediaError``."""
    try:
        with _open(src) as container:
            stream = _video_stream(container)
            index = 0
            for frame in container.decode(stream):
                yield index, frame, normalize_rotation(frame.rotation)
                index += 1
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise _as_media_error(e) from e


def frame_to_array(frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` in display orientation, optionally resized to display ``(h, w)``."""
    if size is not None:
        h, w = size
        if rotation in (90, 270):
            h, w = w, h
        if (h, w) != (frame.height, frame.width):
            interp = "AREA" if h * w < frame.height * frame.width else "BICUBIC"
            frame = frame.reformat(width=w, height=h, format="rgb24", interpolation=interp)
    return apply_rotation(frame.to_ndarray(format="rgb24"), rotation)


def read_header(src: Source) -> tuple[float, str]:
    """``(fps, codec name)`` of the first video stream, from the container header only."""
    try:
        with _open(src) as container:
            stream = _video_stream(container)
            return stream_fps(stream), stream.codec_context.name
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise _as_media_error(e) from e


def probe(src: Source) -> MediaInfo:
    """Header plus one full decode to count frames reliably (headers can lie or be missing)."""
    fps, codec = read_header(src)
    num, first = 0, None
    for num, frame, rotation in iter_video_frames(src):  # noqa: B007 - num counts the frames after the loop
        if first is None:
            first = (frame.height, frame.width, rotation)
    if first is None:
        raise MediaError("no decodable video frames")
    h, w, rotation = first
    if rotation in (90, 270):
        h, w = w, h
    return MediaInfo(h, w, num + 1, fps, rotation, codec)


def decode_video(
    src: Source,
    indices: Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decodes frames ``indices`` (all if None) to ``uint8 [T, H, W, 3]``, resized to ``size``.

    Frames are decoded sequentially and only the wanted ones are converted to RGB, so sampling a
    strided subset costs one pass of decoding and ``len(indices)`` colour conversions.
    """
    wanted = None if indices is None else sorted({int(i) for i in indices})
    last = None if wanted is None else (wanted[-1] if wanted else -1)
    frames: dict[int, np.ndarray] = {}
    for index, frame, rotation in iter_video_frames(src):
        if last is not None and index > last:
            break
        if wanted is None or index in wanted:
            frames[index] = frame_to_array(frame, rotation, size)
    order = list(frames) if indices is None else [int(i) for i in indices]
    missing = [i for i in order if i not in frames]
    if missing or not order:
        raise MediaError(f"video has {len(frames)} decodable frames; wanted frame(s) {missing[:4] or order}")
    out = np.stack([frames[i] for i in order])
    chex.assert_rank(out, 4)
    return out


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (``I;16*``) and 32-bit integer (``I``: 16-bit PNG/TIFF samples, clipped to
    0..65535) grayscale -> 8-bit ``L`` by ``value >> 8``; Pillow's ``convert`` would clip them."""
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image).astype(np.int64)
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")


def open_image(src: Source) -> Image.Image:
    """Opens and fully loads an image in display orientation (EXIF transposed) as 8-bit RGB."""
    try:
        image = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else os.fspath(src))
        image.load()
        return to_8bit(ImageOps.exif_transpose(image)).convert("RGB")
    except Image.UnidentifiedImageError as e:
        raise MediaError("unreadable image: not a known image format") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"unreadable image: {type(e).__name__}: {e}") from e


def decode_image(src: Source, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image bytes/path -> ``uint8 [1, H, W, 3]`` (a one-frame clip), optionally resized."""
    image = open_image(src)
    if size is not None and (size[1], size[0]) != image.size:
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)[None]


def encode_png(frame: np.ndarray) -> bytes:
    chex.assert_rank(frame, 3)
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()


def _even(x: int) -> int:
    return max(2, x - x % 2)


class VideoEncoder:
    """Streaming encoder to in-memory bytes: ``enc.add(frame)`` per ``uint8 [H, W, 3]`` frame, then
    ``enc.close()`` returns the bytes. Frames are cropped to even sizes (for yuv420p); equal frames
    give equal bytes (see the module docstring)."""

    def __init__(
        self,
        height: int,
        width: int,
        fps: float,
        *,
        codec: str = "libx264",
        container_format: str = "mp4",
        crf: int = 18,
        pix_fmt: str | None = None,
        options: dict[str, str] | None = None,
    ):
        self.height, self.width = _even(height), _even(width)
        self._rate = Fraction(fps).limit_denominator(1001)
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format=container_format, options={"fflags": "+bitexact"})
        self._stream = self._out.add_stream(codec, rate=self._rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
        opts = {"threads": "1", "flags": "+bitexact"}
        if codec == "libx264":
            # With macroblock-tree rate control, x264 (core 165) gave different bytes for identical
            # input in about 1 run in 10 (seen on 64x64 clips); without it the output is bit-exact.
            opts.update({"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"})
        self._stream.codec_context.options = {**opts, **(options or {})}
        self.num_frames = 0

    def add(self, frame: np.ndarray) -> None:
        chex.assert_rank(frame, 3)
        rgb = np.ascontiguousarray(frame[: self.height, : self.width], dtype=np.uint8)
        video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        video_frame.pts, video_frame.time_base = self.num_frames, 1 / self._rate
        self._out.mux(self._stream.encode(video_frame))
        self.num_frames += 1

    def close(self) -> bytes:
        self._out.mux(self._stream.encode(None))
        self._out.close()
        return self._buf.getvalue()


def encode_video(frames: np.ndarray | Sequence[np.ndarray], fps: float, **kwargs) -> bytes:
    """Encodes ``uint8 [T, H, W, 3]`` to in-memory video bytes (H.264/mp4 by default; keyword
    arguments as for ``VideoEncoder``). Odd heights/widths lose their last row/column."""
    frames = np.asarray(frames, dtype=np.uint8)
    chex.assert_rank(frames, 4)
    encoder = VideoEncoder(frames.shape[1], frames.shape[2], fps, **kwargs)
    for frame in frames:
        encoder.add(frame)
    return encoder.close()


def write_video(path: str | os.PathLike, frames_uint8: np.ndarray, fps: float) -> str:
    """Writes ``[T, H, W, 3]`` uint8 frames to ``.mp4`` (H.264), ``.webm`` (VP9) or ``.gif``."""
    path = os.fspath(path)
    frames = np.asarray(frames_uint8)
    chex.assert_rank(frames, 4)
    if frames.dtype != np.uint8:
        raise TypeError(f"write_video wants uint8 frames, got {frames.dtype}")
    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
        return path
    formats = {".mp4": ("libx264", "mp4"), ".m4v": ("libx264", "mp4"), ".webm": ("libvpx-vp9", "webm")}
    if ext not in formats:
        raise ValueError(f"write_video: unsupported extension {ext!r} in {path} (use .mp4, .webm or .gif)")
    codec, fmt = formats[ext]
    data = encode_video(frames, fps, codec=codec, container_format=fmt)
    with open(path, "wb") as f:
        f.write(data)
    return path
