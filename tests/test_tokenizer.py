"""T5Tokenizer: T5 conventions, and identical ids from the sentencepiece and tensorflow_text backends
on a SentencePiece model trained here (no network)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sentencepiece as spm

from stiv_jax.text.tokenizer import EOS_ID, PAD_ID, T5Tokenizer

TRAIN = [
    "a red ball bounces across a wooden table",
    "the camera pans slowly over a snowy mountain ridge at sunrise",
    "two cats chase each other around a sofa in a bright living room",
    "waves crash against the rocks while seagulls circle overhead",
    "a chef slices vegetables on a cutting board, close-up shot",
    "timelapse of clouds drifting above a city skyline at night",
    "ein Hund läuft über eine grüne Wiese",
    "un chat noir dort sur le rebord de la fenêtre",
    "東京の夜景、ネオンが輝く通り",
] * 20

CORPUS = [
    "",
    "a red ball",
    "A RED BALL!!! bounces?",
    "   leading and trailing spaces   ",
    "ein Hund läuft über eine grüne Wiese — schnell",
    "東京の夜景、ネオンが輝く通り",
    "emoji 🎬🐱 and unseen characters ∮ ∂ ℵ",
    "tabs\tand\nnewlines, a \x00 null",
    "ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ",  # NFKC-normalised by the model
    " ".join(["the camera pans slowly over a snowy mountain ridge at sunrise"] * 20),  # truncated
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("spm") / "t5")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN), model_prefix=prefix, vocab_size=100, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc", minloglevel=2,
    )  # fmt: skip
    return prefix + ".model"


def test_t5_conventions(model_path):
    tok = T5Tokenizer(model_path, max_length=16)
    ids, mask = tok(CORPUS)
    assert ids.shape == mask.shape == (len(CORPUS), 16) and ids.dtype == np.int32 and mask.dtype == bool
    lengths = mask.sum(1)
    assert lengths[0] == 1 and ids[0, 0] == EOS_ID  # the empty prompt is just EOS
    assert lengths[-1] == 16 and ids[-1, -1] == EOS_ID  # truncated so EOS still fits
    for row, n in zip(ids, lengths):
        assert row[n - 1] == EOS_ID and np.all(row[n:] == PAD_ID) and np.all(row[: n - 1] > EOS_ID)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    assert tok.encode(["a red ball"])[0] == sp.encode("a red ball") + [EOS_ID]
    assert tok.vocab_size == 100
    clone = pickle.loads(pickle.dumps(tok))  # Grain workers receive the tokenizer by pickle
    np.testing.assert_array_equal(clone(CORPUS)[0], ids)


def test_missing_model_and_bad_backend(model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        T5Tokenizer(str(tmp_path / "nope.model"))
    with pytest.raises(ValueError, match="unknown tokenizer backend 'hf'"):
        T5Tokenizer(model_path, backend="hf")


def test_backends_give_identical_ids(model_path):
    pytest.importorskip(
        "tensorflow_text",
        reason="tensorflow_text backend not installed (pip install 'stiv_jax[tf]', which pulls full TensorFlow)",
    )
    for max_length in (8, 128):
        a = T5Tokenizer(model_path, max_length=max_length, backend="sentencepiece")
        b = T5Tokenizer(model_path, max_length=max_length, backend="tensorflow_text")
        ids_a, mask_a = a(CORPUS)
        ids_b, mask_b = b(CORPUS)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(mask_a, mask_b)
        assert a.vocab_size == b.vocab_size == 100
        assert a([])[0].shape == b([])[0].shape == (0, max_length)  # an empty batch, not a float tensor
    assert mask_a.sum(1).max() > 50  # the long prompt really exercised long inputs
