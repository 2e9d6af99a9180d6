"""Runs on object storage (issue 20): the console scripts against a local GCS emulator.

Every command is the installed console script in a subprocess whose only GCS settings are
``STORAGE_EMULATOR_HOST`` and ``TENSORSTORE_GCS_HTTP_URL`` (no credentials), run from an empty
folder with its own empty ``TMPDIR``. The bucket is read back through the emulator's JSON API,
not through the project's path layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stiv_jax.data import video_io
from tests.data_fixtures import demo_dir, demo_shards
from tests.gcs_emulator import GCSEmulator
from tests.train_utils import demo_tokenizer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "stiv-test"
TINY = [
    "--config=" + str(REPO / "experiments/tiny_synthetic.py"),
    "--config.mesh.fsdp=1",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=10",
]


class Cloud:
    """The emulator plus the environment and scratch folders of the subprocesses."""

    def __init__(self, root: Path):
        self.gcs = GCSEmulator()
        self.gcs.create_bucket(BUCKET)
        self.cwd, self.tmp = root / "cwd", root / "tmpdir"
        self.cwd.mkdir()
        self.tmp.mkdir()
        self.env = {
            **os.environ,
            **self.gcs.env,
            "JAX_PLATFORMS": "cpu",
            "TMPDIR": str(self.tmp),
            "PYTHONUNBUFFERED": "1",
        }
        for key in ("EPATH_USE_TF", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "STIV_GCSFUSE_ROOT"):
            self.env.pop(key, None)  # the project's own defaults must be enough

    def run(self, script: str, *args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / script), *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def objects(self, prefix: str) -> list[str]:
        return [n[len(prefix) :] for n in self.gcs.list(BUCKET, prefix)]

    @contextlib.contextmanager
    def in_process(self):
        """This test process talks to the emulator too (for reads checked against the CLI's)."""
        saved = {k: os.environ.get(k) for k in self.gcs.env}
        os.environ.update(self.gcs.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    def metrics(self, run: str) -> dict[int, float]:
        rows = [json.loads(line) for line in self.gcs.read(BUCKET, f"{run}/metrics.jsonl").decode().splitlines()]
        return {r["step"]: r["loss"] for r in rows}  # a resumed run logs the steps after its checkpoint again


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("gcs"))
    yield c
    c.gcs.stop()


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc


def _no_local_traces(cloud: Cloud) -> None:
    """Nothing of a gs:// run on local disk: no ./gs: folder, no leftover buffers in TMPDIR."""
    assert list(cloud.cwd.iterdir()) == []
    assert list(cloud.tmp.iterdir()) == []
    assert not (REPO / "gs:").exists()


def _sigterm_at(cloud: Cloud, step: int, *args: str) -> tuple[int, str]:
    """Starts stiv-train, sends SIGTERM once it logged ``step``; returns (exit code, stdout)."""
    proc = subprocess.Popen(
        [str(BIN / "stiv-train"), *args],
        cwd=cloud.cwd,
        env=cloud.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"step {step}/"):
                proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        proc.kill()
    return proc.returncode, "".join(lines) + proc.stderr.read()


def test_train_sigterm_resume_sample_export_and_init_from_on_gs(cloud, tmp_path):
    spm = demo_tokenizer(tmp_path)
    cloud.gcs.write(BUCKET, "assets/spm.model", Path(spm).read_bytes())
    args = [*TINY, "--config.num_train_steps=40", f"--config.data.tokenizer_path=gs://{BUCKET}/assets/spm.model"]

    _ok(cloud.run("stiv-train", *args, f"--workdir=gs://{BUCKET}/straight"))
    code, out = _sigterm_at(cloud, 3, *args, f"--workdir=gs://{BUCKET}/run")
    assert code == 0, out
    stopped = int(out.split("saved checkpoint at step ")[1].split()[0])
    assert 3 <= stopped < 40, out
    assert any(n.startswith(f"checkpoints/{stopped}/state/") for n in cloud.objects("run/"))
    resumed = _ok(cloud.run("stiv-train", *args, f"--workdir=gs://{BUCKET}/run"))
    assert f"Resumed from gs://{BUCKET}/run at step {stopped}" in resumed.stdout

    straight, run = cloud.metrics("straight"), cloud.metrics("run")
    assert sorted(run) == sorted(straight) == list(range(1, 41))
    assert [run[s] for s in range(1, 41)] == [straight[s] for s in range(1, 41)]  # bit-identical

    sample = _ok(
        cloud.run(
            "stiv-sample",
            f"--workdir=gs://{BUCKET}/run",
            "--prompt=a red circle moving right",
            "--steps=3",
            "--emulated_steps=10",
        )
    )
    url = sample.stdout.strip().splitlines()[-1]
    assert url == f"gs://{BUCKET}/run/samples/t2v_a_red_circle_moving_right_s0.mp4"
    frames = video_io.decode_video(cloud.gcs.read(BUCKET, url[len(f"gs://{BUCKET}/") :]))
    assert frames.shape == (4, 16, 16, 3)

    export = _ok(cloud.run("stiv-export-torch", f"--workdir=gs://{BUCKET}/run"))
    assert export.stdout.strip() == f"gs://{BUCKET}/run/export/stiv.safetensors"
    local = tmp_path / "stiv.safetensors"
    local.write_bytes(cloud.gcs.read(BUCKET, "run/export/stiv.safetensors"))
    (tmp_path / "stiv.json").write_bytes(cloud.gcs.read(BUCKET, "run/export/stiv.json"))
    _export_matches_checkpoint(cloud, local)

    init = _ok(
        cloud.run(
            "stiv-train",
            *args,
            "--config.num_train_steps=2",
            f"--workdir=gs://{BUCKET}/init",
            f"--config.init_from.spatial=gs://{BUCKET}/run",
        )
    )
    assert f"spatial parameter arrays from gs://{BUCKET}/run (step 40, EMA)" in init.stdout

    names = cloud.objects("run/")
    for expected in ("config.json", "metrics.jsonl", "checkpoints/40/_CHECKPOINT_METADATA", "export/stiv.json"):
        assert expected in names, names
    assert any(n.startswith("tb/events.out.tfevents.") for n in names)
    assert len([n for n in names if n.startswith("tb/")]) == 2  # one event file per training session
    assert "checkpoints/2/_CHECKPOINT_METADATA" in cloud.objects("init/")
    _no_local_traces(cloud)


def _export_matches_checkpoint(cloud: Cloud, exported: Path) -> None:
    """The exported tensors are the run's EMA weights, read here in-process from the emulator."""
    from safetensors.numpy import load_file

    from stiv_jax.export import convert

    with cloud.in_process():
        cfg, params, _ = convert.load_run(f"gs://{BUCKET}/run")
    tensors = load_file(exported)
    expected = convert.flax_to_torch(params, cfg)
    assert sorted(tensors) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(tensors[k], v, err_msg=k)


def test_shards_written_to_gs_and_read_through_the_mount(cloud, tmp_path):
    demo = demo_dir()
    _ok(
        cloud.run(
            "stiv-make-shards",
            f"--input={demo}",
            f"--out=gs://{BUCKET}/shards",
            "--records_per_shard=8",
            f"--captions={demo}/captions.jsonl",
        )
    )
    local = sorted(os.listdir(demo_shards()))
    assert cloud.objects("shards/") == local  # the same files, byte for byte
    for name in local:
        assert cloud.gcs.read(BUCKET, f"shards/{name}") == Path(demo_shards(), name).read_bytes(), name
    cloud.gcs.write(BUCKET, "demo/spm.model", Path(demo, "spm.model").read_bytes())

    from stiv_jax.text.tokenizer import T5Tokenizer

    vocab = T5Tokenizer(f"{demo}/spm.model").vocab_size
    args = [
        *TINY,
        "--config.data.kind=shards",
        f"--config.data.path=gs://{BUCKET}/shards",
        "--config.data.frame_strides=(1,)",
        f"--config.data.tokenizer_path=gs://{BUCKET}/demo/spm.model",
        f"--config.text.vocab_size={vocab}",
    ]
    unmounted = tmp_path / "no_mount"
    workdir = tmp_path / "run"
    failed = cloud.run("stiv-train", *args, f"--workdir={workdir}", STIV_GCSFUSE_ROOT=str(unmounted), timeout=120)
    assert failed.returncode == 2
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stiv-train: error: data.path=gs://{BUCKET}/shards is in a bucket"), failed.stderr
    assert f"gcsfuse -o ro --implicit-dirs {BUCKET} {unmounted}/{BUCKET}" in last
    assert "Traceback" not in failed.stderr and not workdir.exists()

    mount = tmp_path / "mount"  # what gcsfuse would show: gs://B/P at ROOT/B/P
    cloud.gcs.download_prefix(BUCKET, "shards/", mount / BUCKET / "shards")
    trained = _ok(
        cloud.run(
            "stiv-train", *args, "--config.num_train_steps=2", f"--workdir={workdir}", STIV_GCSFUSE_ROOT=str(mount)
        )
    )
    assert "step 2/2" in trained.stdout

    _ok(
        cloud.run(
            "stiv-encode-shards",
            f"--input=gs://{BUCKET}/shards",
            f"--out=gs://{BUCKET}/latents",
            "--autoencoder=pixel:2",
            f"--tokenizer_path=gs://{BUCKET}/demo/spm.model",
            "--num_frames=4",
            "--resolution=16",
            "--frame_strides=1",
            STIV_GCSFUSE_ROOT=str(mount),
        )
    )
    latents = cloud.objects("latents/")
    assert "manifest.json" in latents and "index.npy" in latents
    manifest = json.loads(cloud.gcs.read(BUCKET, "latents/manifest.json"))
    assert manifest["num_records"] == json.loads(cloud.gcs.read(BUCKET, "shards/manifest.json"))["num_records"]
    assert sorted(s["name"] for s in manifest["shards"]) == sorted(n for n in latents if n.endswith(".array_record"))
    _no_local_traces(cloud)


def test_logs_reach_the_bucket_while_the_run_goes_on(cloud, monkeypatch):
    from stiv_jax.storage.workdir import RunLog, Workdir

    monkeypatch.setenv("TMPDIR", str(cloud.tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    with cloud.in_process():
        log = RunLog(Workdir(f"gs://{BUCKET}/live"), sync_every_secs=0.0)
        try:
            log.write(1, {"loss": 0.5})
            assert cloud.metrics("live") == {1: 0.5}  # uploaded before the run ends
            log.write(2, {"loss": 0.25})
            assert cloud.metrics("live") == {1: 0.5, 2: 0.25}
            assert [n for n in cloud.objects("live/") if n.startswith("tb/events.out.tfevents.")]
        finally:
            log.close()
        again = RunLog(Workdir(f"gs://{BUCKET}/live"), sync_every_secs=3600.0)  # a resumed run
        again.write(3, {"loss": 0.125})
        assert cloud.metrics("live") == {1: 0.5, 2: 0.25}  # not yet: the next upload is due in an hour
        again.sync()  # as after a checkpoint
        assert cloud.metrics("live") == {1: 0.5, 2: 0.25, 3: 0.125}
        again.close()
    assert len([n for n in cloud.objects("live/") if n.startswith("tb/")]) == 2
    assert list(cloud.tmp.iterdir()) == []
