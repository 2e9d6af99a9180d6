"""CLIP score of text-to-video samples — CLIPSIM (Wu et al. 2021, "GODIVA"; the protocol of Make-A-Video
and most T2V papers): the average over the frames of a video of ``100 · cos(text embedding, frame
embedding)``, then averaged over videos.

Text embedding: :class:`stiv_jax.text.clip.CLIPTextModel`'s projected pooled output; frame embedding:
:class:`stiv_jax.eval.clip_vision.CLIPVisionModel`'s projected class token, on frames preprocessed as
CLIP's (:func:`stiv_jax.eval.clip_vision.preprocess`). Both are L2-normalised in float64. Unlike
torchmetrics' ``CLIPScore``, negative cosines are not clamped to 0. Matmuls and convolutions run at
``Precision.HIGHEST`` (float32 on every accelerator).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
import numpy as np

from stiv_jax.errors import ConfigError
from stiv_jax.eval.clip_vision import CLIPVisionModel, load_clip_vision, preprocess
from stiv_jax.text.clip import CLIPTextModel

Tokenizer = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]  # prompts -> (ids [B, L], mask [B, L])

PROTOCOL: dict[str, Any] = {
    "metric": "clipscore",
    "reference": "CLIPSIM, Wu et al. 2021 (GODIVA); Radford et al. 2021 (CLIP)",
    "score": "100 * cos(text, frame), mean over the frames of a video, then over videos; no clamping at 0",
    "text": "CLIP text tower, projected pooled output, L2-normalised",
    "frames": "CLIP vision tower, projected class token, L2-normalised",
    "preprocessing": "shorter side to image_size (jax.image.resize bicubic, antialias, rounded to uint8 levels), "
    "centre crop, /255, CLIP mean/std",
    "precision": "float32, Precision.HIGHEST; cosines in float64",
}


class _Captioned(Protocol):
    frames: np.ndarray  # uint8 [T, H, W, 3]
    caption: str


@jax.jit
def _text_embeds(model: CLIPTextModel, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return model(ids, mask).projected


@jax.jit
def _image_embeds(model: CLIPVisionModel, pixels: jax.Array) -> jax.Array:
    return model(pixels).projected


@functools.partial(jax.jit, static_argnums=1)
def _preprocess(frames: jax.Array, image_size: int) -> jax.Array:
    return preprocess(frames, image_size)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batched(fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """``fn`` over row chunks of ``min(batch_size, N)`` (the last zero-padded: one compile per size)."""
    n = len(arrays[0])
    batch, out = max(1, min(batch_size, n)), []
    for start in range(0, n, batch):
        chunks = [a[start : start + batch] for a in arrays]
        rows = len(chunks[0])
        chunks = [np.concatenate([c, np.zeros((batch - rows, *c.shape[1:]), c.dtype)]) for c in chunks]
        with jax.default_matmul_precision("highest"):
            out.append(np.asarray(fn(*(jnp.asarray(c) for c in chunks)))[:rows])
    return np.concatenate(out)


def text_embeddings(
    prompts: Sequence[str], *, text_model: CLIPTextModel, tokenizer: Tokenizer, batch_size: int = 64
) -> np.ndarray:
    """``prompts -> float64 [B, projection_dim]``, L2-normalised."""
    if not text_model.config.projection_dim:
        raise ConfigError("CLIP score needs a text tower with a text_projection (its projection_dim is None)")
    ids, mask = tokenizer(list(prompts))
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    chex.assert_rank([ids, mask], 2)
    chex.assert_equal_shape([ids, mask])
    chex.assert_axis_dimension(ids, 0, len(prompts))
    return _normalise(_batched(functools.partial(_text_embeds, text_model), [ids, mask], batch_size))


def image_embeddings(frames: np.ndarray, *, vision_model: CLIPVisionModel, batch_size: int = 64) -> np.ndarray:
    """``uint8 [N, H, W, 3] -> float64 [N, projection_dim]``, L2-normalised."""
    frames = np.asarray(frames)
    chex.assert_rank(frames, 4)
    chex.assert_axis_dimension(frames, 3, 3)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype}")
    if not vision_model.config.projection_dim:
        raise ConfigError("CLIP score needs a vision tower with a visual_projection (its projection_dim is None)")
    size = vision_model.config.image_size
    embed = lambda x: _image_embeds(vision_model, _preprocess(x, size))
    return _normalise(_batched(embed, [frames], batch_size))


def _check_dims(text_model: CLIPTextModel, vision_model: CLIPVisionModel) -> None:
    t, v = text_model.config.projection_dim, vision_model.config.projection_dim
    if t != v:
        raise ConfigError(f"CLIP text projection_dim {t} != vision projection_dim {v}: not one CLIP model")


def clip_scores(
    videos: np.ndarray,
    prompts: Sequence[str],
    *,
    text_model: CLIPTextModel,
    vision_model: CLIPVisionModel,
    tokenizer: Tokenizer,
    batch_size: int = 64,
) -> np.ndarray:
    """Per-video CLIP score, ``float64 [B]``: ``mean_t 100 · cos(text_b, frame_{b,t})``.

    ``videos`` is uint8 ``[B, T, H, W, 3]``; ``prompts`` has ``B`` strings; ``tokenizer`` maps the
    prompts to ``(ids [B, L], mask [B, L])`` for ``text_model`` (e.g. a CLIP BPE tokenizer).
    """
    videos = np.asarray(videos)
    chex.assert_rank(videos, 5)
    b, t = videos.shape[:2]
    if len(prompts) != b:
        raise ValueError(f"{b} videos but {len(prompts)} prompts")
    _check_dims(text_model, vision_model)
    text = text_embeddings(prompts, text_model=text_model, tokenizer=tokenizer, batch_size=batch_size)
    frames = image_embeddings(
        videos.reshape(b * t, *videos.shape[2:]), vision_model=vision_model, batch_size=batch_size
    )
    cos = np.einsum("btd,bd->bt", frames.reshape(b, t, -1), text)
    return 100.0 * cos.mean(axis=1)


def clip_score(
    videos: np.ndarray,
    prompts: Sequence[str],
    *,
    text_model: CLIPTextModel,
    vision_model: CLIPVisionModel,
    tokenizer: Tokenizer,
    batch_size: int = 64,
) -> float:
    """CLIP score of a set of videos: the mean over videos of :func:`clip_scores`."""
    scores = clip_scores(
        videos, prompts, text_model=text_model, vision_model=vision_model, tokenizer=tokenizer, batch_size=batch_size
    )
    return float(scores.mean())


def captioned_clip_score(
    videos: Sequence[_Captioned],
    *,
    text_model: CLIPTextModel,
    vision_model: CLIPVisionModel,
    tokenizer: Tokenizer,
    batch_size: int = 64,
) -> float:
    """CLIP score of videos of any (mixed) sizes, each with ``.frames`` (uint8 ``[T, H, W, 3]``) and
    ``.caption`` (e.g. :class:`stiv_jax.eval.videos.Video`)."""
    if not videos:
        raise ValueError("CLIP score of no videos")
    missing = [i for i, v in enumerate(videos) if not v.caption]
    if missing:
        raise ConfigError(f"CLIP score needs a prompt per video; videos {missing[:8]} have no caption")
    _check_dims(text_model, vision_model)
    text = text_embeddings(
        [v.caption for v in videos], text_model=text_model, tokenizer=tokenizer, batch_size=batch_size
    )
    scores = [
        100.0 * np.mean(image_embeddings(v.frames, vision_model=vision_model, batch_size=batch_size) @ text[i])
        for i, v in enumerate(videos)
    ]
    return float(np.mean(scores))


def scorer(clip: str, clip_vision: str, *, batch_size: int = 64) -> Callable[[Sequence[_Captioned]], float]:
    """``videos -> CLIP score`` from a ``stiv-import --kind=clip`` directory (the text tower, with its
    projection), a Hugging Face CLIP vision directory (:func:`~stiv_jax.eval.clip_vision.load_clip_vision`)
    and CLIP's BPE tokenizer (:class:`stiv_jax.text.clip_tokenizer.CLIPTokenizer`)."""
    from stiv_jax.encoders.pretrained import load_pretrained
    from stiv_jax.text.clip_tokenizer import CLIPTokenizer

    text_model = load_pretrained(clip, expect_kind="clip").model
    vision_model = load_clip_vision(clip_vision)
    _check_dims(text_model, vision_model)
    tokenizer = CLIPTokenizer(max_length=min(77, text_model.config.max_length))
    kw = dict(text_model=text_model, vision_model=vision_model, tokenizer=tokenizer, batch_size=batch_size)
    return lambda videos: captioned_clip_score(videos, **kw)
