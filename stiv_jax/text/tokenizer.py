"""T5 SentencePiece tokenizer (paper App. C: prompts are tokenized with the T5 tokenizer).

T5 conventions: id 0 = ``<pad>``, 1 = ``</s>`` (EOS, appended), 2 = ``<unk>``, no BOS. Output is a
fixed-length ``int32`` id matrix plus a boolean attention mask, so batches have static shapes.
Backends: ``sentencepiece`` (default, light, picklable so it runs inside Grain workers) and
``tensorflow_text`` (the ``tf`` extra); both give identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stiv_jax.storage import paths

PAD_ID = 0
EOS_ID = 1


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


def null_text_ids(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids/mask of the empty prompt in the T5 convention: just EOS, then padding."""
    ids = np.full((1, length), PAD_ID, np.int32)
    ids[0, 0] = EOS_ID
    mask = np.zeros((1, length), bool)
    mask[0, 0] = True
    return ids, mask
