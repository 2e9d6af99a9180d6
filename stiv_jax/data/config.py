"""Default ``config.data`` for the input pipeline (a locked ml_collections ConfigDict).

Keys (unknown keys fail fast because the dict is locked):

* ``path`` — shard folder: ``stiv-make-shards`` output (mode 'pixels') or ``stiv-encode-shards``
  output (mode 'latents').
* ``mode`` — 'pixels': decode clips in the workers and yield the pixel batch
  (``video, text_ids, text_mask, micro, key, skipped``); 'latents': read cached latents and text
  embeddings (``latents, text_emb, pooled_text, text_mask, micro, key, skipped``, or ``text_ids``
  instead of ``text_emb``/``pooled_text`` when the cache was written without a text encoder).
* ``num_frames``, ``resolution`` — the single square bucket ``(num_frames, resolution,
  resolution)`` used when ``buckets`` is empty. ``num_frames=1`` makes a T2I pipeline (images,
  and single frames of videos).
* ``buckets`` — ``((T, H, W), ...)``: every batch has one of these shapes. Images go to T=1
  buckets; a video goes to the longest bucket it is long enough for at the smallest stride, then
  to the closest aspect ratio. Records that fit no bucket are left out (logged).
* ``frame_strides`` — candidate temporal strides in source frames; each clip uses a random one
  that fits (the first fitting one when ``random_crop`` is False). Recorded in ``micro``.
* ``random_crop`` — random spatial crop offsets and temporal start (else centred).
* ``seed`` — shuffling and augmentation seed (the stream is a pure function of it).
* ``num_epochs`` — passes over the data; 0 repeats forever (training).
* ``num_workers`` — Grain worker processes that decode (0: decode in the main process).
* ``read_threads`` — threads per process that run the decoding ahead (PyAV releases the GIL).
* ``prefetch`` — batches buffered per worker / ahead of the consumer.
* ``tokenizer`` — 't5' (SentencePiece, T5 ids; the paper's) or 'clip' (CLIP BPE, for public CLIP
  text encoders; stiv_jax/text/clip_tokenizer.py). Configs saved without it are 't5'.
* ``tokenizer_path`` — 't5': the SentencePiece model, required unless latents carry embeddings;
  'clip': a BPE vocabulary ``.gz`` (empty: the packaged ``bpe_simple_vocab_16e6.txt.gz``).
* ``max_text_length`` — token length L (padded/truncated, EOS included); <= 77 with 'clip'.
* ``max_skipped_fraction`` — bad records (unreadable or undecodable; each is replaced by the next
  record of the stream and counted in the batch's ``skipped``) the trainer tolerates, as a
  fraction of the examples read so far; past it training stops.
Latent mode reads shapes and micro-conditions from the cache, so ``num_frames``, ``resolution``,
``buckets``, ``frame_strides`` and ``random_crop`` apply when the cache is written
(``stiv-encode-shards``), not when it is read.
"""

from __future__ import annotations

import ml_collections


def get_data_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.path = ""
    config.mode = "pixels"
    config.num_frames = 16
    config.resolution = 64
    config.buckets = ()
    config.frame_strides = (1, 2, 3)
    config.random_crop = True
    config.seed = 0
    config.num_epochs = 0
    config.num_workers = 0
    config.read_threads = 2
    config.prefetch = 2
    config.tokenizer = "t5"
    config.tokenizer_path = ""
    config.max_text_length = 64
    config.max_skipped_fraction = 0.01
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the offending ``data.*`` key."""
    if not config.path:
        raise ValueError("data.path is empty: set it to a shard folder (stiv-make-shards output)")
    if config.mode not in ("pixels", "latents"):
        raise ValueError(f"data.mode must be 'pixels' or 'latents', got {config.mode!r}")
    if not config.frame_strides or any(int(s) < 1 for s in config.frame_strides):
        raise ValueError(f"data.frame_strides must be positive integers, got {config.frame_strides!r}")
    for t, h, w in buckets(config):
        if min(t, h, w) < 1:
            raise ValueError(f"data.buckets entries must be positive (T, H, W), got {(t, h, w)}")
    for key in ("num_workers", "read_threads", "prefetch", "num_epochs"):
        if config[key] < 0:
            raise ValueError(f"data.{key} must be >= 0, got {config[key]}")
    if config.max_text_length < 2:
        raise ValueError(f"data.max_text_length must be >= 2, got {config.max_text_length}")
    tokenizer = config.get("tokenizer", "t5")
    if tokenizer not in ("t5", "clip"):
        raise ValueError(f"data.tokenizer must be 't5' or 'clip', got {tokenizer!r}")
    if tokenizer == "clip" and config.max_text_length > 77:
        raise ValueError(
            f"data.max_text_length={config.max_text_length} but data.tokenizer='clip' has 77 positions (CLIP's)"
        )
    if not 0.0 <= config.max_skipped_fraction <= 1.0:
        raise ValueError(f"data.max_skipped_fraction must be in [0, 1], got {config.max_skipped_fraction}")


def buckets(config: ml_collections.ConfigDict) -> list[tuple[int, int, int]]:
    """The configured ``(T, H, W)`` shapes (``buckets``, or the square default)."""
    if config.buckets:
        return [tuple(int(v) for v in b) for b in config.buckets]
    return [(int(config.num_frames), int(config.resolution), int(config.resolution))]
