"""CLIP BPE tokenizer (issue 24): ids identical to open_clip's ``SimpleTokenizer`` on the real
vocabulary, the tokenizer factory, the tokenizer/encoder pairing refused in one line, and a tiny
training run whose CLIP text encoder reads CLIP ids."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference_packages

from stiv_jax.errors import ConfigError
from stiv_jax.text import clip_tokenizer
from stiv_jax.text.clip_tokenizer import EOT_ID, SOT_ID, CLIPTokenizer
from stiv_jax.text.tokenizer import T5Tokenizer, check_pairing, make_tokenizer, null_text_ids

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "",
    "a red ball",
    "A Red BALL bounces ACROSS the Table",
    "don't stop, it's what we'll do; they've I'm you'd she's",
    "café naïve résumé Ümlaut façade Ørsted ŁÓDŹ",
    "東京の夜景、ネオンが輝く通り 一只猫在沙发上睡觉 고양이",
    "emoji 🎬🐱🔥 and a family 👩‍👩‍👧 with skin tone 👍🏽",
    "fish &amp; chips &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &amp;amp; &#39;x&#39; &nbsp;",
    "punctuation!!! ... ?! -- (brackets) [x] {y} #hashtag @user 50% $9.99 a/b\\c ~`^",
    "numbers 1234567 3.14159 1st 2nd 2024-12-02 0x1F",
    "   repeated    whitespace\n\n\tnew\r\nlines  and\ttabs   ",
    "mojibake: The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",  # ftfy repairs it
    "ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ ∮ ∂ ℵ \u200b zero width \x00 null",
    "literal <start_of_text> and <END_OF_TEXT> markers",
    " ".join(["the camera pans slowly over a snowy mountain ridge at sunrise"] * 12),  # > 77 tokens
]


@pytest.fixture(scope="module")
def reference():
    """open_clip's tokenizer module, loaded by file path (open_clip itself needs timm/torchvision)."""
    spec = importlib.util.spec_from_file_location(
        "open_clip_tokenizer_reference", os.path.join(reference_packages.package_dir("open_clip"), "tokenizer.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


@pytest.mark.parametrize("length", [77, 16])
def test_ids_match_open_clip(reference, tokenizer, length):
    tok = tokenizer if length == 77 else CLIPTokenizer(max_length=length)
    ref = reference.SimpleTokenizer()
    want = ref(TEXTS, context_length=length).numpy()
    if length == 77:
        np.testing.assert_array_equal(want, reference.tokenize(TEXTS).numpy())
    ids, mask = tok(TEXTS)
    assert ids.shape == mask.shape == (len(TEXTS), length) and ids.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(ids, want)
    assert ids[0, :3].tolist() == [SOT_ID, EOT_ID, 0]  # the empty prompt
    assert ids[-1, -1] == EOT_ID and mask[-1].all()  # truncated, the end token kept last
    # The mask marks exactly the real tokens (ids may be 0 inside: "!" is id 0).
    for text, row, m, count in zip(TEXTS, ids, mask, tok.token_counts(TEXTS)):
        n = min(count, length)
        assert m[:n].all() and not m[n:].any() and row[0] == SOT_ID and row[n - 1] == EOT_ID, text
        assert np.all(row[n:] == 0) and count == len(ref.encode(text)) + 2
    assert tok.vocab_size == ref.vocab_size == 49408


def test_id_zero_inside_a_prompt_is_masked(tokenizer):
    ids, mask = tokenizer(['wow !"!'])  # "!" inside a symbol run is id 0, the padding id
    assert ids[0, :5].tolist() == [SOT_ID, 2781, 0, 10377, EOT_ID] and mask[0].tolist() == [True] * 5 + [False] * 72


def test_decode_and_pickle(tokenizer):
    ids, _ = tokenizer(["Hello, World! café 東京"])
    assert tokenizer.decode(ids[0]).strip() == "hello , world ! café 東京"
    clone = pickle.loads(pickle.dumps(tokenizer))  # Grain workers: the tables are not pickled
    assert len(pickle.dumps(tokenizer)) < 2000
    np.testing.assert_array_equal(clone(TEXTS)[0], tokenizer(TEXTS)[0])


def test_factory_builds_each_kind(tmp_path):
    import sentencepiece as spm

    prefix = str(tmp_path / "t5")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a red ball bounces", "a blue cube slides left"] * 20), model_prefix=prefix,
        vocab_size=20, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    t5 = make_tokenizer("t5", prefix + ".model", 8)
    assert isinstance(t5, T5Tokenizer) and t5.max_length == 8
    clip = make_tokenizer("clip", "", 12)
    assert isinstance(clip, CLIPTokenizer) and clip.max_length == 12 and clip.vocab_path == clip_tokenizer.DEFAULT_VOCAB
    assert os.path.getsize(clip_tokenizer.DEFAULT_VOCAB) == 1_356_917  # the packaged vocabulary
    assert make_tokenizer("clip", clip_tokenizer.DEFAULT_VOCAB, 77).vocab_size == 49408
    for kind, tok in (("t5", t5), ("clip", clip)):  # the empty prompt as each tokenizer gives it
        ids, mask = null_text_ids(tok.max_length, kind)
        want_ids, want_mask = tok([""])
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(mask, want_mask)
    assert null_text_ids(4)[0].tolist() == [[1, 0, 0, 0]]  # T5 by default, as before
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe'"):
        make_tokenizer("bpe", "", 8)
    with pytest.raises(ValueError, match="data.tokenizer_path"):
        make_tokenizer("t5", "", 8)
    with pytest.raises(ValueError, match="77 positions"):
        make_tokenizer("clip", "", 78)
    with pytest.raises(FileNotFoundError):
        make_tokenizer("clip", str(tmp_path / "nope.txt.gz"), 8)


@pytest.mark.parametrize(
    "tokenizer,length,kind,vocab,message",
    [
        ("t5", 128, "clip", 49408, "config.text.kind='clip'.*config.data.tokenizer='t5'"),
        ("t5", 128, "clip", None, "set config.data.tokenizer=clip"),
        ("clip", 78, "clip", 49408, "config.data.max_text_length=78"),
        ("clip", 77, "t5", 32128, "set config.data.tokenizer=t5"),
        ("clip", 77, "clip", 32128, "set config.data.tokenizer=t5"),  # STIV's own stiv-bigG: T5 ids
        ("clip", 16, "embedding", 64, "config.text.vocab_size=49408"),
        ("sentencepiece", 16, "embedding", 64, "config.data.tokenizer='sentencepiece'"),
    ],
)
def test_pairings_that_cannot_work_are_refused(tokenizer, length, kind, vocab, message):
    with pytest.raises(ConfigError, match=message):
        check_pairing(tokenizer, length, kind, vocab)


@pytest.mark.parametrize(
    "tokenizer,kind,vocab",
    [("clip", "clip", 49408), ("t5", "clip", 32128), ("t5", "t5", 32128), ("clip", "embedding", 49408)]
    + [("t5", "embedding", 64), ("clip", "cached", None), ("t5", "cached", None)],
)
def test_pairings_that_work_pass(tokenizer, kind, vocab):
    check_pairing(tokenizer, 77, kind, vocab)


def tiny_clip_json(path: Path) -> str:
    """A random tiny CLIP text encoder on CLIP's vocabulary (``config.text.model``)."""
    from stiv_jax.text.clip import CLIPTextConfig

    cfg = CLIPTextConfig(width=64, num_layers=1, num_heads=2, mlp_dim=128)  # 49,408 ids, 77 positions
    path.write_text(json.dumps(cfg.to_dict()))
    return str(path)


def test_train_refuses_a_clip_encoder_with_the_t5_tokenizer(tmp_path):
    """stiv-train: one error line naming config.data.tokenizer, exit 2, before anything is written."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    common = [
        str(Path(sys.executable).parent / "stiv-train"),
        f"--config={REPO / 'experiments/tiny_synthetic.py'}",
        "--config.mesh.fsdp=1",
        "--config.text.kind=clip",
        f"--config.text.model={tiny_clip_json(tmp_path / 'clip.json')}",
    ]
    for args, starts, names in (
        ([], "config.text.kind='clip'", "config.data.tokenizer='t5'"),
        (["--config.data.tokenizer=clip", "--config.data.max_text_length=78"], "config.data.max_text_length=78", ""),
    ):
        wd = tmp_path / f"run{len(args)}"
        proc = subprocess.run([*common, f"--workdir={wd}", *args], env=env, capture_output=True, text=True, timeout=240)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith(f"stiv-train: error: {starts}") and names in lines[0], lines[0]
        assert not wd.exists() or not any(wd.iterdir())


def test_tiny_clip_run_trains_on_clip_ids_and_old_runs_are_refused_by_the_sampler(tmp_path, capsys):
    """A 2-step run with a random CLIP encoder and data.tokenizer='clip': the pipeline yields
    ``<start_of_text> … <end_of_text>`` ids; the sampler rebuilds the CLIP tokenizer; the same run
    saved without data.tokenizer (an old run: T5) is refused by stiv-sample in one line."""
    from data_fixtures import demo_dir, demo_shards
    from train_utils import run as train
    from train_utils import tiny_train_config

    from stiv_jax.cli import sample as cli
    from stiv_jax.data import pipeline as data_pipeline
    from stiv_jax.sampling import pipeline

    overrides = {
        "num_train_steps": 2,
        "data.kind": "shards",
        "data.path": demo_shards(),
        "data.tokenizer": "clip",
        "data.frame_strides": (1,),
        "data.max_text_length": 16,
        "text.kind": "clip",
        "text.model": tiny_clip_json(tmp_path / "clip.json"),
    }
    config = tiny_train_config(**overrides)
    batch = next(data_pipeline.make_iterator(config, batch_size=4))
    ids, mask = batch["text_ids"], batch["text_mask"].astype(bool)
    assert ids.shape == (4, 16) and ids.max() < 49408
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert row[0] == SOT_ID and row[n - 1] == EOT_ID and m[:n].all() and np.all(row[n:] == 0)
        assert EOT_ID not in row[1 : n - 1] and SOT_ID not in row[1:]

    wd = tmp_path / "run"
    metrics = train(config, str(wd))
    assert np.isfinite(metrics["loss"])
    sampler = pipeline.load_sampler(str(wd), log=lambda _: None)
    assert isinstance(sampler.tokenizer, CLIPTokenizer) and sampler.tokenizer.max_length == 16
    assert sampler.encode_prompts(["a red circle moving left"])["text"].shape == (1, 16, 64)

    old = tmp_path / "old_run"  # config.json of a run from before data.tokenizer: T5 ids
    old.mkdir()
    os.symlink(wd / "checkpoints", old / "checkpoints")
    saved = json.loads((wd / "config.json").read_text())
    del saved["data"]["tokenizer"]
    saved["data"]["tokenizer_path"] = f"{demo_dir()}/spm.model"
    (old / "config.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as e:
        cli.run([f"--workdir={old}", "--prompt=a red circle", f"--out={tmp_path / 'x.mp4'}", "--steps=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("stiv-sample: error: config.text.kind='clip'") and "config.data.tokenizer='t5'" in err[0]
