"""Prompt tokenizers: T5 SentencePiece (paper App. C: prompts are tokenized with the T5 tokenizer)
and CLIP BPE (Radford et al. 2021; ``clip_tokenizer``) for public CLIP text encoders.

:func:`make_tokenizer` builds either from ``config.data.tokenizer`` (``'t5'`` | ``'clip'``);
:func:`check_pairing` refuses a tokenizer whose ids the text encoder cannot read.

T5 conventions: id 0 = ``<pad>``, 1 = ``</s>`` (EOS, appended), 2 = ``<unk>``, no BOS. Output is a
fixed-length ``int32`` id matrix plus a boolean attention mask, so batches have static shapes.
Backends: ``sentencepiece`` (default, light, picklable so it runs inside Grain workers) and
``tensorflow_text`` (the ``tf`` extra); both give identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from stiv_jax.errors import ConfigError
from stiv_jax.storage import paths
from stiv_jax.text import clip_tokenizer as clip_bpe

PAD_ID = 0
EOS_ID = 1
TOKENIZERS = ("t5", "clip")


class Tokenizer(Protocol):
    """What the data pipeline and the sampler use of a tokenizer (T5 or CLIP)."""

    max_length: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


class T5Tokenizer:
    """Callable: ``tokenizer(texts) -> (ids [N, max_length] int32, mask [N, max_length] bool)``."""

    def __init__(self, model_path: str, max_length: int = 128, backend: str = "sentencepiece"):
        if not paths.exists(model_path):  # local or gs://
            raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
        if backend not in ("sentencepiece", "tensorflow_text"):
            raise ValueError(f"unknown tokenizer backend {backend!r}; use 'sentencepiece' or 'tensorflow_text'")
        self.model_path = model_path
        self.max_length = int(max_length)
        self.backend = backend
        self._impl = None

    def __getstate__(self):  # picklable for Grain worker processes: reload lazily there
        return {**self.__dict__, "_impl": None}

    def _load(self):
        if self._impl is None:
            if self.backend == "sentencepiece":
                import sentencepiece as spm

                self._impl = spm.SentencePieceProcessor(model_proto=paths.read_bytes(self.model_path))
            else:
                import tensorflow_text as tft

                self._impl = tft.SentencepieceTokenizer(model=paths.read_bytes(self.model_path), add_eos=False)
        return self._impl

    @property
    def vocab_size(self) -> int:
        impl = self._load()
        return int(impl.vocab_size() if self.backend == "sentencepiece" else impl.vocab_size())

    def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
        impl = self._load()
        if self.backend == "sentencepiece":
            return impl.encode(list(texts), out_type=int)
        import tensorflow as tf

        # An explicit string dtype: tf.constant([]) would be float32 and fail in the op.
        return impl.tokenize(tf.constant(list(texts), dtype=tf.string)).to_list()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded ids with EOS appended (truncated so EOS always fits)."""
        return [p[: self.max_length - 1] + [EOS_ID] for p in self._pieces(texts)]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Ids each text needs, EOS included, before truncation (> ``max_length``: cut)."""
        return [len(p) + 1 for p in self._pieces(texts)]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self.encode(texts)
        ids = np.full((len(rows), self.max_length), PAD_ID, np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        mask = np.zeros_like(ids, dtype=bool)
        for i, row in enumerate(rows):
            mask[i, : len(row)] = True
        return ids, mask


def make_tokenizer(kind: str, path: str = "", max_length: int = 128) -> Tokenizer:
    """The tokenizer ``config.data.tokenizer`` names: ``'t5'`` (the SentencePiece model at
    ``path``) or ``'clip'`` (the BPE vocabulary at ``path``; empty: the packaged one)."""
    if kind == "t5":
        if not path:
            raise ValueError("the T5 tokenizer needs a SentencePiece model: set data.tokenizer_path")
        return T5Tokenizer(path, max_length)
    if kind == "clip":
        return clip_bpe.CLIPTokenizer(path or None, max_length)
    raise ValueError(f"unknown tokenizer {kind!r}; use one of {'|'.join(TOKENIZERS)} (data.tokenizer)")


def null_text_ids(length: int, kind: str = "t5") -> tuple[np.ndarray, np.ndarray]:
    """Token ids/mask of the empty prompt: T5 just EOS, CLIP ``<start_of_text> <end_of_text>``,
    then padding (what the tokenizer gives for ``""``)."""
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {kind!r}; use one of {'|'.join(TOKENIZERS)} (data.tokenizer)")
    row = [clip_bpe.SOT_ID, clip_bpe.EOT_ID] if kind == "clip" else [EOS_ID]
    ids = np.full((1, length), PAD_ID, np.int32)
    ids[0, : len(row)] = row
    mask = np.zeros((1, length), bool)
    mask[0, : len(row)] = True
    return ids, mask


def check_pairing(
    tokenizer: str,
    max_length: int,
    text_kind: str,
    vocab_size: int | None,
    keys: tuple[str, str, str] = ("config.data.tokenizer", "config.text.kind", "config.data.max_text_length"),
) -> None:
    """Raises :class:`ConfigError` (naming ``keys``: tokenizer, encoder kind, text length) when the
    encoder cannot read the tokenizer's ids. ``vocab_size``: the encoder's (``None``: unknown).

    A CLIP encoder on CLIP's vocabulary (49,408 ids, the public weights) needs the CLIP tokenizer;
    one on a smaller vocabulary (STIV's own ``stiv-bigG``, T5 ids) and T5 encoders need T5 ids;
    the CLIP tokenizer has 77 positions."""
    tk, kk, lk = keys
    if tokenizer not in TOKENIZERS:
        raise ConfigError(
            f"{tk}={tokenizer!r}: use 't5' (SentencePiece model at data.tokenizer_path) or 'clip' (CLIP BPE)"
        )
    if tokenizer == "clip" and max_length > clip_bpe.CONTEXT_LENGTH:
        raise ConfigError(f"{lk}={max_length} but {tk}='clip' has {clip_bpe.CONTEXT_LENGTH} positions: use {lk} <= 77")
    if text_kind == "clip" and tokenizer != "clip" and vocab_size in (None, clip_bpe.VOCAB_SIZE):
        raise ConfigError(
            f"{kk}='clip' (a CLIP encoder on CLIP's {clip_bpe.VOCAB_SIZE}-id BPE vocabulary) reads CLIP ids, but "
            f"{tk}={tokenizer!r} gives T5 SentencePiece ids: set {tk}=clip"
        )
    too_small = vocab_size is not None and vocab_size < clip_bpe.VOCAB_SIZE
    if tokenizer == "clip" and text_kind == "embedding" and too_small:
        raise ConfigError(
            f"{tk}='clip' gives ids up to {clip_bpe.EOT_ID} but the {kk}='embedding' table has {vocab_size} "
            f"rows: set config.text.vocab_size={clip_bpe.VOCAB_SIZE}"
        )
    if tokenizer == "clip" and (text_kind == "t5" or (text_kind == "clip" and too_small)):
        size = "" if vocab_size is None else f" of {vocab_size} ids"
        raise ConfigError(
            f"{tk}='clip' gives CLIP ids (up to {clip_bpe.EOT_ID}) but the text encoder ({kk}={text_kind!r}, "
            f"vocabulary{size}) reads T5 ids: set {tk}=t5"
        )
