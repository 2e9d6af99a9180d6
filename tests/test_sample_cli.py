"""stiv-sample and the sampling pipeline end to end (issue 5): a tiny run trained with the real
trainer, then every task through the CLI, files decoded back, seeds, conditioning pixels, EMA."""

import os
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from stiv_jax.cli import sample as cli
from stiv_jax.data import synthetic, video_io
from stiv_jax.sampling import inputs, pipeline
from stiv_jax.train.setup import load_train_state
from tests.train_utils import demo_tokenizer, tiny_train_config
from tests.train_utils import run as train

T, R = 4, 16  # tiny_synthetic: 4 frames at 16x16
FAST = ["--steps=3", "--emulated_steps=10"]
STIV_SAMPLE = os.path.join(os.path.dirname(sys.executable), "stiv-sample")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny STIV trained for 3 steps (EMA ≠ raw; checkpoints 1, 2, 3) with a SentencePiece
    tokenizer (T5 ids)."""
    root = tmp_path_factory.mktemp("sample_cli")
    spm = demo_tokenizer(root)
    wd = str(root / "run")
    train(tiny_train_config(num_train_steps=3, checkpoint_every_steps=1, **{"data.tokenizer_path": spm}), wd)
    return wd


@pytest.fixture(scope="module")
def sampler(workdir):
    return pipeline.load_sampler(workdir)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Two 16x16 demo frames (first / last frame of a moving red circle) as PNG files."""
    root = tmp_path_factory.mktemp("images")
    clip = synthetic.render_clip("red", "circle", "right", 5, R, np.random.default_rng(0))
    paths = []
    for name, frame in (("first.png", clip[0]), ("last.png", clip[-1])):
        Image.fromarray(frame).save(root / name)
        paths.append(str(root / name))
    return paths, clip[[0, -1]]


def sample(workdir, out, *flags, prompt="a red circle moving right"):
    return cli.run([f"--workdir={workdir}", f"--prompt={prompt}", f"--out={out}", *FAST, *flags])


def test_t2v_mp4_is_seeded_and_reproducible(workdir, tmp_path, capsys):
    a, b, c = (str(tmp_path / f"{n}.mp4") for n in "abc")
    assert sample(workdir, a, "--seed=3") == [a]
    assert capsys.readouterr().out.strip().splitlines()[-1] == a
    sample(workdir, b, "--seed=3")
    sample(workdir, c, "--seed=4")
    frames = video_io.decode_video(a)
    assert frames.shape == (T, R, R, 3)
    with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
        bytes_a, bytes_b, bytes_c = fa.read(), fb.read(), fc.read()
    assert bytes_a == bytes_b  # same seed: identical file
    assert bytes_a != bytes_c
    assert np.abs(frames.astype(int) - video_io.decode_video(c).astype(int)).mean() > 1.0


def test_ti2v_gif_starts_with_the_image(workdir, pngs, tmp_path):
    (first, _), clip = pngs
    out = str(tmp_path / "ti2v.gif")
    sample(workdir, out, "--task=ti2v", f"--image={first}", "--guidance=sit", "--image_scale=1.5")
    frames = video_io.decode_video(out)
    assert frames.shape == (T, R, R, 3)
    # GIF stores a palette: the first frame matches the image up to palette quantisation.
    assert np.abs(frames[0].astype(int) - clip[0].astype(int)).mean() < 3.0


def test_ti2v_first_frame_is_exactly_the_image(sampler, pngs):
    """Pixel autoencoder: encode → replace at every step → decode is lossless on the uint8 grid."""
    (first, _), clip = pngs
    # Same program as the CLI's ti2v/sit run above (compiled once per test session).
    options = dict(task="ti2v", guidance="sit", steps=3, emulated_steps=10, seed=0)
    video = sampler.generate("a red circle moving right", image=first, **options)
    assert video.shape == (1, T, R, R, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video[0, 0], clip[0])
    assert np.abs(video[0, 1:].astype(int) - clip[0].astype(int)).max() > 0  # the rest is sampled
    # uint8 arrays and float pixels in [-1, 1] are the same input as the file.
    for image in (clip[0], inputs.to_unit_range(clip[0])):
        np.testing.assert_array_equal(sampler.generate("a red circle moving right", image=image, **options), video)


def test_a_16_bit_png_conditions_like_its_8_bit_version(sampler, tmp_path):
    """A 16-bit grayscale PNG (mode I;16) used to turn white: it is the 8-bit image ×257."""
    gray8 = np.tile(np.linspace(0, 255, R).astype(np.uint8), (R, 1))
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # PIL writes mode I;16
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    options = dict(task="ti2v", guidance="sit", steps=3, emulated_steps=10, seed=0)
    video = sampler.generate("a red circle moving right", image=str(tmp_path / "g16.png"), **options)
    np.testing.assert_array_equal(video[0, 0], np.repeat(gray8[..., None], 3, axis=-1))


def test_interpolate_keeps_both_ends(workdir, pngs, tmp_path):
    (first, last), clip = pngs
    out = str(tmp_path / "interp.mp4")
    sample(workdir, out, "--task=interpolate", f"--image={first}", f"--last_image={last}")
    frames = video_io.decode_video(out).astype(int)
    assert frames.shape == (T, R, R, 3)
    for got, want in ((frames[0], clip[0]), (frames[-1], clip[1])):  # up to H.264 loss
        assert np.abs(got - want.astype(int)).mean() < 6.0


def test_long_video_frame_count(workdir, tmp_path):
    out = str(tmp_path / "long.mp4")
    sample(workdir, out, "--task=long", "--long_keyframes=4")
    assert video_io.probe(out).num_frames == (4 - 1) * T  # K − 1 interpolation clips of T frames


def test_t2i_prompts_file_writes_one_png_per_prompt(workdir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n\na green triangle standing still\n")
    out = str(tmp_path / "img.png")
    paths = cli.run([f"--workdir={workdir}", f"--prompts_file={prompts}", f"--out={out}", "--task=t2i", *FAST])
    assert paths == [str(tmp_path / "img_000.png"), str(tmp_path / "img_001.png")]
    assert capsys.readouterr().out.split() == paths
    images = [np.asarray(Image.open(path)) for path in paths]
    assert images[0].shape == images[1].shape == (R, R, 3)
    assert np.abs(images[0].astype(int) - images[1].astype(int)).max() > 0


def test_batch_size_chunks_pad_and_are_seeded(sampler):
    """Three prompts in chunks of 2: the short last chunk is padded and cropped; chunk i draws its
    noise from fold_in(seed, i), so the first chunk equals a two-prompt call."""
    prompts = ["a red circle moving left", "a green triangle standing still", "a blue square"]
    options = dict(task="t2i", steps=3, emulated_steps=10, seed=5)
    chunked = sampler.generate(prompts, batch_size=2, **options)
    assert chunked.shape == (3, 1, R, R, 3)
    np.testing.assert_array_equal(chunked[:2], sampler.generate(prompts[:2], **options))
    assert np.abs(chunked[2].astype(int) - chunked[0].astype(int)).max() > 0


def test_timings_keep_the_wait_for_other_processes_out_of_compile(sampler, monkeypatch):
    """``compile`` is the lowering and compiling of each new program; the time spent meeting the
    other processes afterwards (here a barrier that takes 1 s, as a slow peer would) is ``wait``."""
    import time

    from stiv_jax.parallel import distributed

    met = []
    monkeypatch.setattr(distributed, "barrier", lambda name, **_: (met.append(name), time.sleep(1.0)))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    start = time.perf_counter()
    sampler.generate(["a red circle"], task="t2i", steps=2, emulated_steps=7, seed=3)  # new programs
    wall = time.perf_counter() - start
    timings = sampler.timings
    assert len(met) >= 2 and timings["wait"] == pytest.approx(len(met), abs=0.2), (met, timings)
    assert timings["compile"] > 0 and sum(timings.values()) <= wall, (timings, wall)


def test_predict_and_upsample_from_a_video(workdir, tmp_path):
    clip = synthetic.render_clip("blue", "square", "down", 8, 32, np.random.default_rng(1))
    given = str(tmp_path / "given.mp4")
    video_io.write_video(given, clip, 8.0)  # 32x32: fitted to 16x16 on the way in
    for task, flags in (("predict", ["--predict_frames=2", "--video_stride=2"]), ("upsample", [])):
        out = str(tmp_path / f"{task}.mp4")
        sample(workdir, out, f"--task={task}", f"--video={given}", "--guidance=cfg", *flags)
        assert video_io.decode_video(out).shape == (T, R, R, 3)


def test_sampler_uses_the_checkpoint_ema_weights(workdir, sampler):
    from flax import nnx

    _, state, step = load_train_state(workdir)
    loaded = nnx.to_pure_dict(nnx.state(sampler.model, nnx.Param))
    assert sampler.step == step == 3 and sampler.ema
    jax.tree.map(np.testing.assert_array_equal, loaded, state["ema_params"])
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), loaded, state["params"]))
    assert max(diffs) > 0  # EMA (decay 0.99) is not the raw parameters
    raw = pipeline.load_sampler(workdir, ema=False)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(raw.model, nnx.Param)), state["params"])


def test_cli_no_ema_samples_the_raw_weights(workdir, tmp_path):
    paths = [str(tmp_path / f"{name}.gif") for name in ("ema", "raw")]
    sample(workdir, paths[0], "--seed=7")
    sample(workdir, paths[1], "--seed=7", "--no_ema")
    ema, raw = (video_io.decode_video(p).astype(int) for p in paths)
    assert np.abs(ema - raw).max() > 0


def test_cached_text_run_needs_and_uses_a_text_encoder(workdir, tmp_path, capsys):
    """A run trained on cached text embeddings samples through the encoder given by --text_encoder."""
    import json

    from stiv_jax.encoders.pretrained import Pretrained, random_init, save_pretrained
    from stiv_jax.text.clip import CLIPTextConfig

    cached = tmp_path / "cached_run"
    cached.mkdir()
    os.symlink(os.path.join(workdir, "checkpoints"), cached / "checkpoints")
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    config["text"]["kind"] = "cached"
    config["data"]["path"] = str(tmp_path / "no_latent_cache")
    (cached / "config.json").write_text(json.dumps(config))
    common = [f"--workdir={cached}", "--prompt=a red circle", *FAST]
    with pytest.raises(SystemExit) as e:
        cli.run([*common, f"--out={tmp_path / 'x.mp4'}"])
    assert e.value.code == 2 and "--text_encoder" in capsys.readouterr().err

    clip_cfg = CLIPTextConfig(
        vocab_size=64, width=64, num_layers=1, num_heads=2, mlp_dim=128, max_length=8, eos_token_id=1, pooling="last"
    )
    encoder = save_pretrained(str(tmp_path / "clip"), Pretrained("clip", clip_cfg, random_init("clip", clip_cfg)))
    out = str(tmp_path / "cached.mp4")
    cli.run([*common, f"--out={out}", f"--text_encoder={encoder}"])
    assert video_io.decode_video(out).shape == (T, R, R, 3)


def test_fit_frames_covers_and_centre_crops():
    frame = np.zeros((16, 24, 3), np.uint8)
    frame[:, :4] = 255  # a band that the centre crop of the 24-wide frame removes
    frame[:, 4:20] = np.arange(16, dtype=np.uint8)[:, None, None] * 10
    out = inputs.fit_frames(frame[None], 16, 16)
    np.testing.assert_array_equal(out[0], frame[:, 4:20])
    small = inputs.fit_frames(frame[None], 8, 8)  # cover 8x8: resize to 8x12, crop 2 columns
    assert small.shape == (1, 8, 8, 3) and small[0, :, 0].max() < 255


@pytest.mark.parametrize(
    "args,message",
    [
        (["--workdir=/nonexistent/run"], "does not exist"),
        (["--task=ti2v"], "needs image (--image)"),
        (["--task=t2v", "--image=/nonexistent.png"], "does not use image"),
        (["--task=ti2v", "--image=/nonexistent.png"], "no such file"),
        (["--task=dance"], "task"),
        (["--out=video.avi"], "extension"),
        (["--schedule=linear_quadratic", "--steps=1"], "num_steps must be >= 2"),
    ],
)
def test_bad_inputs_fail_clearly(workdir, tmp_path, capsys, args, message):
    flags = {
        a.split("=")[0]: a
        for a in [f"--workdir={workdir}", f"--out={tmp_path / 'x.mp4'}", "--prompt=a red circle", *args]
    }
    with pytest.raises(SystemExit) as e:
        cli.run(list(flags.values()))
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and err[-1].startswith("stiv-sample: error: ") and message in err[-1]


def test_help_prints_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--task=t2v|ti2v|predict|interpolate|long|t2i|upsample" in out and "--prompts_file" in out


def test_missing_tokenizer_is_named(workdir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(
            [
                f"--workdir={workdir}",
                "--prompt=x",
                f"--out={tmp_path / 'x.mp4'}",
                "--tokenizer_path=/nonexistent/spm.model",
            ]
        )
    assert e.value.code == 2 and "/nonexistent/spm.model" in capsys.readouterr().err


# ---------------------------------------------------------- the console script, as a subprocess


def stiv_sample(*args: str, shell_suffix: str | None = None) -> subprocess.CompletedProcess:
    """Runs the installed ``stiv-sample`` (through ``bash -c`` when ``shell_suffix`` is given)."""
    if shell_suffix is None:
        return subprocess.run([STIV_SAMPLE, *args], capture_output=True, text=True, timeout=300)
    command = shlex.join([STIV_SAMPLE, *args]) + shell_suffix
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, *parts: str) -> str:
    """Exit status 2, nothing on stdout, one ``stiv-sample: error:`` line on stderr holding ``parts``."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and not proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("stiv-sample: error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "flag,out",
    [
        ("--scale=nan", "x.mp4"),
        ("--scale=-inf", "x.mp4"),
        ("--image_scale=nan", "x.mp4"),
        ("--high_scale=nan", "x.mp4"),
        ("--split_sigma=0", "x.mp4"),
        ("--fps=0", "x.mp4"),
        ("--fps=nan", "x.mp4"),
        ("--fps=-5", "x.gif"),
        ("--fps=200", "x.gif"),
        ("--seed=-1", "x.mp4"),
    ],
)
def test_bad_number_flags_fail_before_loading_a_model(workdir, tmp_path, flag, out):
    """NaN scales used to write an all-black video and bad frame rates crashed after sampling
    (a .gif at --fps=-5 kept one frame): now one line naming the flag, and nothing is written."""
    name = flag.split("=")[0]
    proc = stiv_sample(
        f"--workdir={workdir}", "--prompt=a red circle", f"--out={tmp_path / out}", "--guidance=sit", *FAST, flag
    )
    line = assert_one_error_line(proc, name)
    assert "loaded" not in proc.stderr and not os.listdir(tmp_path), line


def test_success_exits_0_in_a_shell_and_long_prompts_are_named_once(workdir, tmp_path):
    """``stiv-sample … && echo ok`` prints ok; a prompt over data.max_text_length (8 here) tokens
    is cut with one warning per distinct prompt, naming its first words and its token count."""
    long_prompt = "a red circle moving right then a blue square moving left and a green triangle"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{long_prompt}\na blue square\n{long_prompt}\n")
    out = str(tmp_path / "img.png")
    proc = stiv_sample(
        f"--workdir={workdir}",
        f"--prompts_file={prompts}",
        f"--out={out}",
        "--task=t2i",
        *FAST,
        shell_suffix=" && echo ok",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[-1] == "ok" and lines[:-1] == [str(tmp_path / f"img_{i:03d}.png") for i in range(3)]
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("stiv-sample: warning: prompt 'a red circle moving right then …' has ")
    assert "tokens (EOS included) but data.max_text_length is 8: the last " in warnings[0]
    assert "Traceback" not in proc.stderr


def test_missing_step_and_damaged_checkpoint_name_the_steps(workdir, tmp_path):
    proc = stiv_sample(f"--workdir={workdir}", "--prompt=a red circle", f"--out={tmp_path / 'x.mp4'}", "--step=7")
    assert_one_error_line(proc, f"no checkpoint at step 7 in {workdir}/checkpoints; available steps: 1, 2, 3")

    damaged = str(tmp_path / "damaged")
    shutil.copytree(workdir, damaged)
    data_dir = os.path.join(damaged, "checkpoints", "3", "state", "ocdbt.process_0", "d")
    for name in os.listdir(data_dir):  # the array chunks of the latest step, cut short
        with open(os.path.join(data_dir, name), "r+b") as f:
            f.truncate(8)
    args = (f"--workdir={damaged}", "--prompt=a red circle", f"--out={tmp_path / 'x.mp4'}")
    assert_one_error_line(
        stiv_sample(*args),
        f"checkpoint step 3 in {damaged}/checkpoints cannot be read (",
        "); other steps: 1, 2 (--step=N)",
    )
    verbose = stiv_sample(*args, "--verbose")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "CheckpointError" in verbose.stderr
    assert not os.path.exists(tmp_path / "x.mp4")


def test_only_closed_loop_errors_are_dropped_after_a_failed_read(monkeypatch, capsys):
    """The filters a checkpoint read installs drop exactly ``RuntimeError('Event loop is closed')``
    (in-flight reads of a failed restore) from each hook that may print it; other errors print."""
    import threading
    import types

    from stiv_jax.storage import checkpoints

    printed = []  # monkeypatch restores the real hooks (the filters wrap these stand-ins) afterwards
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(("unraisable", str(info.exc_value))))
    monkeypatch.setattr(sys, "excepthook", lambda t, v, tb: printed.append(("except", str(v))))
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(("thread", str(args.exc_value))))
    checkpoints._quiet_closed_loop_callbacks()
    checkpoints._quiet_closed_loop_callbacks()  # idempotent: one layer of filters
    for exc in (
        RuntimeError("Event loop is closed"),
        RuntimeError("something else"),
        ValueError("Event loop is closed"),
    ):
        sys.unraisablehook(types.SimpleNamespace(exc_value=exc))
        sys.excepthook(type(exc), exc, None)
        threading.excepthook(types.SimpleNamespace(exc_value=exc))
    assert printed == [
        (hook, msg) for msg in ("something else", "Event loop is closed") for hook in ("unraisable", "except", "thread")
    ]
