"""Clip sampling, crop/resize and micro-conditions (paper §2.1 "Singleton Condition", App. B).

A training example is ``num_frames`` frames taken every ``frame_stride`` source frames (the paper's
default video sampling keeps 1 of every 3 frames), resized so the target ``H x W`` is covered
(aspect kept) and cropped to it. What was sampled is returned as the SDXL-style micro-conditions
``(orig_h, orig_w, crop_top, crop_left, frame_stride, num_frames)`` in raw units:

* ``orig_h, orig_w`` — the stored clip's display size, before any resize;
* ``crop_top, crop_left`` — the crop offset in pixels of the *resized* frame (SDXL convention);
* ``frame_stride`` — distance between sampled frames in source frames (1 for images);
* ``num_frames`` — frames in the sampled clip (``T``; 1 for images).

Everything runs inside Grain workers: ``SampleClip`` is a picklable callable ``(record, rng) ->
element``; all randomness comes from the ``np.random.Generator`` Grain derives from the pipeline
seed and the element index, so it is reproducible and checkpoint-friendly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import numpy as np

from stiv_jax.data import shards, video_io
from stiv_jax.model.micro import micro_conditions


def fitting_strides(num_source_frames: int, num_frames: int, strides: Sequence[int]) -> list[int]:
    """Strides ``s`` with ``(num_frames - 1) * s + 1 <= num_source_frames``, in config order."""
    return [s for s in strides if (num_frames - 1) * s + 1 <= num_source_frames]


def sample_frame_indices(
    num_source_frames: int, num_frames: int, strides: Sequence[int], rng: np.random.Generator | None
) -> tuple[np.ndarray, int]:
    """Frame indices ``[num_frames]`` and the stride used.

    With ``rng``: a random fitting stride and a random start. Without: the first fitting stride
    and the centred window (deterministic, for latent caching and evaluation).
    """
    options = fitting_strides(num_source_frames, num_frames, strides)
    if not options:
        raise ValueError(
            f"clip of {num_source_frames} frames is too short for {num_frames} frames at strides {tuple(strides)}"
        )
    stride = int(rng.choice(options)) if rng is not None else options[0]
    slack = num_source_frames - (num_frames - 1) * stride  # number of valid start positions
    start = int(rng.integers(0, slack)) if rng is not None else (slack - 1) // 2
    return start + stride * np.arange(num_frames), stride


def crop_geometry(
    height: int, width: int, target_h: int, target_w: int, rng: np.random.Generator | None
) -> tuple[int, int, int, int]:
    """``(resized_h, resized_w, crop_top, crop_left)``: scale to cover the target, then crop.

    Random offsets with ``rng``, centred otherwise.
    """
    scale = max(target_h / height, target_w / width)
    rh, rw = max(target_h, round(height * scale)), max(target_w, round(width * scale))
    if rng is not None:
        top, left = int(rng.integers(0, rh - target_h + 1)), int(rng.integers(0, rw - target_w + 1))
    else:
        top, left = (rh - target_h) // 2, (rw - target_w) // 2
    return rh, rw, top, left


def to_unit_range(frames: np.ndarray) -> np.ndarray:
    """``uint8`` pixels -> ``float32`` in [-1, 1]."""
    return frames.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


@dataclasses.dataclass(frozen=True)
class SampleClip:
    """Record bytes -> ``{'video', 'text_ids', 'text_mask', 'micro', 'key'}`` for one bucket.

    ``video`` is ``float32 [T, H, W, 3]`` in [-1, 1]; images give ``T = 1``. ``tokenizer`` maps a
    list of strings to ``(ids [N, L] int32, mask [N, L] bool)`` (``T5Tokenizer``).
    """

    num_frames: int
    height: int
    width: int
    strides: tuple[int, ...]
    random_crop: bool
    tokenizer: object

    def __call__(self, raw: bytes, rng: np.random.Generator | None = None) -> dict:
        rec = shards.decode_record(raw)
        rng = rng if self.random_crop else None
        h, w = rec["height"], rec["width"]
        rh, rw, top, left = crop_geometry(h, w, self.height, self.width, rng)
        if rec["kind"] == "image":
            if self.num_frames != 1:
                raise ValueError(f"record {rec['key']} is an image but the bucket has {self.num_frames} frames")
            frames, stride = video_io.decode_image(rec["data"], size=(rh, rw)), 1
        else:
            indices, stride = sample_frame_indices(rec["num_frames"], self.num_frames, self.strides, rng)
            try:
                frames = video_io.decode_video(rec["data"], indices, size=(rh, rw))
            except video_io.MediaError as e:
                raise video_io.MediaError(f"record key={rec['key']} ({rec['source']}): {e}") from e
        frames = frames[:, top : top + self.height, left : left + self.width]
        chex.assert_shape(frames, (self.num_frames, self.height, self.width, 3))
        ids, mask = self.tokenizer([rec["caption"]])
        micro = micro_conditions(
            orig_h=h, orig_w=w, crop_top=top, crop_left=left, frame_stride=stride, num_frames=self.num_frames
        )
        return {
            "video": to_unit_range(frames),
            "text_ids": ids[0],
            "text_mask": mask[0],
            "micro": micro,
            "key": np.int32(rec["key"]),
        }


def read_latent_record(raw: bytes) -> dict:
    """Latent-cache record bytes -> the latent-cache element dict (float arrays as float32)."""
    rec = shards.decode_record(raw)
    out = {"latents": rec["latents"].astype(np.float32), "micro": rec["micro"].astype(np.float32)}
    if "text_emb" in rec:
        out["text_emb"] = rec["text_emb"].astype(np.float32)
        out["pooled_text"] = rec["pooled_text"].astype(np.float32)
    else:
        out["text_ids"] = rec["text_ids"].astype(np.int32)
    out["text_mask"] = rec["text_mask"].astype(bool)
    out["key"] = np.int32(rec["key"])
    return out
