"""CLIP's byte-level BPE tokenizer (Radford et al. 2021, CLIP), for public CLIP text encoders.

Byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
Units") over UTF-8 bytes mapped to printable characters, with the 48,894 merges of OpenAI's
``bpe_simple_vocab_16e6.txt.gz`` (packaged in ``stiv_jax/text/assets``, MIT). Ids are those of
OpenAI CLIP / open_clip's ``SimpleTokenizer`` (``open_clip.tokenize``): text cleaned with ftfy,
HTML-unescaped twice, whitespace collapsed and lower-cased; ``<start_of_text>`` = 49406 first,
``<end_of_text>`` = 49407 last, then zero padding; a text that does not fit is cut to
``max_length`` ids whose last one is replaced by ``<end_of_text>``. Vocabulary: 49,408 ids
(256 bytes, 256 word-final bytes, the merges, the two special tokens); 77 positions.

Same interface as :class:`stiv_jax.text.tokenizer.T5Tokenizer`: ``tokenizer(texts) -> (ids [N, L]
int32, mask [N, L] bool)``, ``encode``, ``token_counts``, ``vocab_size``, ``max_length``.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
from collections.abc import Sequence

import ftfy
import numpy as np
import regex

from stiv_jax.storage import paths

CONTEXT_LENGTH = 77  # CLIP's learned positions
VOCAB_SIZE = 49408
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
NUM_MERGES = VOCAB_SIZE - 2 * 256 - len(SPECIAL_TOKENS)  # 48,894: lines 1.. of the merges file
DEFAULT_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "bpe_simple_vocab_16e6.txt.gz")
END_OF_WORD = "</w>"
# Special tokens, English contractions, letter runs, single digits, runs of other non-space symbols.
_SPLIT = regex.compile(
    "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_CACHE_LIMIT = 100_000  # BPE results kept per process (words repeat a lot in captions)


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """Byte → printable character: printable Latin-1 bytes keep their own character, every other
    byte (controls, space, …) gets ``chr(256 + k)`` in byte order; key order = vocabulary order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def clean(text: str) -> str:
    """open_clip's ``'lower'`` cleaning: ftfy, HTML entities (twice), collapsed whitespace, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    """Callable: ``tokenizer(texts) -> (ids [N, max_length] int32, mask [N, max_length] bool)``.

    ``vocab_path``: a merges file like ``bpe_simple_vocab_16e6.txt.gz`` (local or gs://; default:
    the packaged one). ``max_length`` <= 77 (CLIP's positions). Loads lazily and pickles without
    its tables, so it runs inside Grain worker processes.
    """

    def __init__(self, vocab_path: str | None = None, max_length: int = CONTEXT_LENGTH):
        vocab_path = vocab_path or DEFAULT_VOCAB
        if not paths.exists(vocab_path):
            raise FileNotFoundError(f"CLIP BPE vocabulary not found: {vocab_path}")
        if not 2 <= int(max_length) <= CONTEXT_LENGTH:
            raise ValueError(
                f"the CLIP tokenizer has {CONTEXT_LENGTH} positions; max_length={max_length} is not in [2, 77]"
            )
        self.vocab_path = vocab_path
        self.max_length = int(max_length)
        self._encoder: dict[str, int] | None = None
        self._ranks: dict[tuple[str, str], int] = {}
        self._cache: dict[str, tuple[int, ...]] = {}

    def __getstate__(self):  # picklable for Grain worker processes: reload lazily there
        return {**self.__dict__, "_encoder": None, "_ranks": {}, "_cache": {}}

    def _load(self) -> dict[str, int]:
        if self._encoder is None:
            lines = gzip.decompress(paths.read_bytes(self.vocab_path)).decode("utf-8").split("\n")
            merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0: a header
            if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
                raise ValueError(f"{self.vocab_path} is not a CLIP BPE vocabulary ({NUM_MERGES} merges expected)")
            alphabet = list(byte_alphabet().values())
            vocab = [*alphabet, *(c + END_OF_WORD for c in alphabet), *("".join(m) for m in merges), *SPECIAL_TOKENS]
            self._ranks = {m: i for i, m in enumerate(merges)}
            self._encoder = {piece: i for i, piece in enumerate(vocab)}
        return self._encoder

    @property
    def vocab_size(self) -> int:
        return len(self._load())

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-token (already mapped to the byte alphabet), merging the lowest-ranked
        adjacent pair everywhere until no pair is a known merge (Sennrich et al. 2016)."""
        encoder = self._load()
        if word in SPECIAL_TOKENS:
            return (encoder[word],)
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            ranked = [(self._ranks.get(pair, NUM_MERGES), pair) for pair in zip(parts, parts[1:])]
            rank, (first, second) = min(ranked, key=lambda r: r[0])
            if rank == NUM_MERGES:  # no known merge left
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = tuple(encoder[p] for p in parts)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def pieces(self, text: str) -> list[int]:
        """Ids of ``text`` without the start/end tokens and without truncation."""
        alphabet = byte_alphabet()
        ids: list[int] = []
        for token in _SPLIT.findall(clean(text)):
            ids.extend(self._bpe("".join(alphabet[b] for b in token.encode("utf-8"))))
        return ids

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded ids, ``<start_of_text>`` … ``<end_of_text>``, cut to ``max_length`` as open_clip does."""
        rows = []
        for text in texts:
            row = [SOT_ID, *self.pieces(text), EOT_ID]
            if len(row) > self.max_length:
                row = row[: self.max_length - 1] + [EOT_ID]
            rows.append(row)
        return rows

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Ids each text needs, both special tokens included, before truncation (> ``max_length``: cut)."""
        return [len(self.pieces(t)) + 2 for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens and padding dropped; words end with a space)."""
        decoder = {i: p for p, i in self._load().items()}
        to_byte = {c: b for b, c in byte_alphabet().items()}
        text = "".join(decoder[int(i)] for i in ids if int(i) not in (SOT_ID, EOT_ID, PAD_ID))
        return bytes(to_byte[c] for c in text).decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self.encode(texts)
        ids = np.full((len(rows), self.max_length), PAD_ID, np.int32)
        mask = np.zeros_like(ids, dtype=bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return ids, mask
