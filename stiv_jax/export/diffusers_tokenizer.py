"""The run's prompt tokenizer as a ``transformers`` tokenizer, for the exported pipeline (no JAX).

:class:`STIVTokenizer` wraps the very tokenizer the run trained with
(``stiv_jax.text.tokenizer.make_tokenizer``: T5 SentencePiece, or CLIP BPE), so the PyTorch
pipeline feeds its text encoder the same ids as ``stiv-sample``. The stock transformers
tokenizers are close but not equal (measured: transformers 5.24's ``T5Tokenizer`` on the demo's
SentencePiece model splits unknown characters into several ``<unk>`` ids where SentencePiece
gives one), and a changed id changes the video.

``tokenizer(texts)`` returns ``input_ids`` / ``attention_mask`` padded to ``max_length``
(the run's ``data.max_text_length``): T5 ids end with ``</s>``, CLIP ids are
``<start_of_text> … <end_of_text>``, both cut so the end token always fits, padding id 0.
The folder holds ``stiv_tokenizer.json`` (kind, max_length) and the vocabulary file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer

from stiv_jax.text.tokenizer import make_tokenizer

CONFIG_FILE = "stiv_tokenizer.json"
VOCAB_FILES = {"t5": "spiece.model", "clip": "bpe_simple_vocab_16e6.txt.gz"}
_SPECIAL = {  # (pad, eos, bos) pieces of each vocabulary
    "t5": ("<pad>", "</s>", None),
    "clip": ("!", "<end_of_text>", "<start_of_text>"),  # open_clip pads with id 0 ("!")
}


class STIVTokenizer(PreTrainedTokenizer):
    """The run's tokenizer (module docstring); ``kind`` is ``t5`` or ``clip``."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, kind: str, max_length: int, **kwargs: Any):
        if kind not in VOCAB_FILES:
            raise ValueError(f"unknown tokenizer kind {kind!r}; use one of {sorted(VOCAB_FILES)}")
        self.kind, self.vocab_file = kind, vocab_file
        self.engine = make_tokenizer(kind, vocab_file, max_length)
        self._vocab = self._pieces()
        self._pieces_of = {i: p for p, i in self._vocab.items()}  # id → piece, built once
        pad, eos, bos = _SPECIAL[kind]
        kwargs.update(pad_token=pad, eos_token=eos, model_max_length=max_length)
        if bos:
            kwargs["bos_token"] = bos
        super().__init__(**kwargs)

    def _pieces(self) -> dict[str, int]:
        if self.kind == "clip":
            return dict(self.engine._load())
        sp = self.engine._load()
        return {sp.id_to_piece(i): i for i in range(sp.vocab_size())}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *args: Any, **kwargs: Any) -> STIVTokenizer:
        """Loads a folder written by :meth:`save_pretrained` (extra diffusers kwargs are ignored)."""
        path = os.fspath(path)
        config_file = os.path.join(path, CONFIG_FILE)
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"{config_file}: not an STIV tokenizer folder")
        with open(config_file) as f:
            config = json.load(f)
        return cls(os.path.join(path, VOCAB_FILES[config["kind"]]), config["kind"], int(config["max_length"]))

    def save_pretrained(self, path: str | os.PathLike, **kwargs: Any) -> tuple[str, str]:
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        vocab = os.path.join(path, VOCAB_FILES[self.kind])
        if os.path.abspath(self.vocab_file) != os.path.abspath(vocab):
            shutil.copyfile(self.vocab_file, vocab)
        config = os.path.join(path, CONFIG_FILE)
        with open(config, "w") as f:
            json.dump({"kind": self.kind, "max_length": self.model_max_length}, f, indent=2)
        return config, vocab

    def __call__(self, text: str | Sequence[str], return_tensors: str | None = None, **kwargs: Any) -> BatchEncoding:
        """``input_ids``, ``attention_mask`` ``[N, max_length]`` (padding/truncation are fixed;
        other transformers keyword arguments are not supported)."""
        if kwargs.get("max_length") not in (None, self.model_max_length):
            raise ValueError(f"this tokenizer always pads to max_length={self.model_max_length}")
        texts = [text] if isinstance(text, str) else list(text)
        ids, mask = self.engine(texts)
        data = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
        if return_tensors is None:
            data = {k: v.tolist() for k, v in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Ids each text needs (end tokens included) before truncation; > ``max_length`` is cut."""
        return self.engine.token_counts(list(texts))

    # The transformers tokenizer interface (vocabulary lookups, decoding).
    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        ids = self.engine.encode([text])[0]
        return [self._pieces_of[i] for i in (ids[1:-1] if self.kind == "clip" else ids[:-1])]

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, 2 if self.kind == "t5" else 0)

    def _convert_id_to_token(self, index: int) -> str:
        return self._pieces_of.get(int(index), "")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        ids = [self._vocab[t] for t in tokens if t in self._vocab]
        if self.kind == "clip":
            return self.engine.decode(ids).strip()
        return self.engine._load().decode(ids)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        return (self.save_pretrained(save_directory)[1],)
