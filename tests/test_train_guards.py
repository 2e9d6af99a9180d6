"""stiv-train protects its workdir and says what is wrong in one line (issue 22), through the
installed console script: a changed model is refused before anything is written, a damaged
newest checkpoint is moved aside and the one before is used, a second trainer is refused, a
stale lock is taken over, bad values fail first, and a killed run resumes with one log row per
step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = ["--config=" + str(REPO / "experiments/tiny_synthetic.py"), "--config.mesh.fsdp=1", "--config.log_every_steps=1"]


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def train(env, workdir, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "stiv-train"), *BASE, f"--workdir={workdir}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(env, workdir, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "stiv-train"), *BASE, f"--workdir={workdir}", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_error_line(proc, starts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stiv-train: error: " + starts), proc.stderr[-3000:]
    return lines[0]


def steps_logged(workdir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"step {step}/"):
            return
    pytest.fail(f"the run ended before step {step}: {proc.stderr.read()[-2000:]}")


@pytest.fixture(scope="module")
def run4(env, tmp_path_factory):
    """A finished 4-step run with checkpoints at 2 and 4."""
    wd = tmp_path_factory.mktemp("run4") / "run"
    ok(train(env, wd, "--config.num_train_steps=4", "--config.checkpoint_every_steps=2"))
    return wd


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_with_another_model_is_refused_and_the_workdir_kept(env, run4, tmp_path):
    wd = _copy(run4, tmp_path / "run")
    before = (wd / "config.json").read_bytes()
    line = one_error_line(train(env, wd, "--config.num_train_steps=6", "--config.model.size=small"), str(wd))
    assert "model.size: 'tiny' → 'small'" in line and "use a new --workdir" in line
    assert (wd / "config.json").read_bytes() == before
    from stiv_jax.train.setup import load_train_state

    assert load_train_state(str(wd))[2] == 4  # the run is as good as before


def _truncate_largest_array(step_dir: Path) -> None:
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_largest_array,
        lambda d: (d / "state" / "_METADATA").unlink(),
        lambda d: __import__("shutil").rmtree(d / "state"),
    ],
    ids=["truncated_array", "no_metadata", "no_state_item"],
)
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_used(env, run4, tmp_path, damage):
    wd = _copy(run4, tmp_path / "run")
    damage(wd / "checkpoints" / "4")
    proc = ok(train(env, wd, "--config.num_train_steps=6", "--config.checkpoint_every_steps=2"))
    assert "Warning: checkpoint step 4 cannot be restored" in proc.stderr
    assert f"Resumed from {wd} at step 2" in proc.stdout
    assert (wd / "damaged_checkpoints" / "4").is_dir()  # kept, not deleted
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())[-1] == 6
    assert steps_logged(wd) == [1, 2, 3, 4, 5, 6]  # the rows after step 2 were logged again, once


def test_a_second_trainer_is_refused_and_a_stale_lock_taken_over(env, tmp_path):
    wd = tmp_path / "run"
    first = start(env, wd, "--config.num_train_steps=400", "--config.checkpoint_every_steps=1000")
    try:
        wait_for_step(first, 2)
        line = one_error_line(train(env, wd, "--config.num_train_steps=400", timeout=120), str(wd / "lock.json"))
        assert f"in use by process {first.pid} on host" in line
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        first.kill()
    assert not (wd / "lock.json").exists()  # released at the end
    assert steps_logged(wd) == list(range(1, len(steps_logged(wd)) + 1))  # the refused run wrote nothing

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (wd / "lock.json").write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "pid": dead.pid,
                "started": time.time(),
                "heartbeat": time.time(),
                "token": "crashed",
            }
        )
    )
    proc = ok(train(env, wd, "--config.num_train_steps=2", "--config.checkpoint_every_steps=1000"))
    assert f"taking over the stale lock {wd / 'lock.json'} of process {dead.pid}" in proc.stderr


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.num_train_steps=0", "config.num_train_steps=0 must be >= 1"),
        ("--config.checkpoint_every_steps=0", "config.checkpoint_every_steps=0 must be >= 1"),
        ("--config.no_such_key=3", "--config.no_such_key: no such key in the config"),
        ("--config.batch_size=six", "flag --config.batch_size=six"),
        # MaskDiT without decoder blocks used to train unmasked without a word
        (
            "--config.model.num_decoder_blocks=0",
            "config.mask_ratio=0.5 masks tokens, but config.model.num_decoder_blocks=0",
        ),
    ],
)
def test_bad_values_fail_in_one_line_before_anything_is_written(env, tmp_path, flag, message):
    wd = tmp_path / "run"
    one_error_line(train(env, wd, flag, timeout=120), message)
    assert not wd.exists()


def test_a_workdir_under_a_file_is_one_line(env, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    line = one_error_line(train(env, tmp_path / "file" / "run", "--config.num_train_steps=1", timeout=120), "")
    assert "Not a directory" in line or "not a directory" in line


def test_kill_9_then_resume_logs_each_step_once(env, tmp_path):
    wd = tmp_path / "run"
    proc = start(
        env,
        wd,
        "--config.num_train_steps=40",
        "--config.checkpoint_every_steps=3",
        "--config.async_checkpointing=False",
    )
    try:
        wait_for_step(proc, 4)
        deadline = time.monotonic() + 30
        while 4 not in steps_logged(wd) and time.monotonic() < deadline:  # row 4: after checkpoint 3
            time.sleep(0.01)
        proc.kill()
        proc.wait(30)
    finally:
        proc.kill()
    checkpoints = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
    assert max(steps_logged(wd)) > checkpoints[-1]  # rows that the resumed run logs again
    resumed = ok(train(env, wd, "--config.num_train_steps=40", "--config.checkpoint_every_steps=3"))
    assert f"taking over the stale lock {wd / 'lock.json'}" in resumed.stderr
    assert steps_logged(wd) == list(range(1, 41))


def test_unreadable_records_are_counted_stopped_past_the_fraction_and_resume_on_other_workers(env, tmp_path):
    """One undecodable record in 20 (demo shards): counted in metrics.jsonl, named in a warning;
    a run allowing none stops in one line; a resume with data workers continues the same stream."""
    from data_fixtures import demo_dir
    from test_data_robustness import BAD_KEY, bad_shards

    shards = [
        f"--config.data.path={bad_shards('garbage')}",
        "--config.data.kind=shards",
        f"--config.data.tokenizer_path={demo_dir()}/spm.model",
        "--config.data.frame_strides=(1,)",
        "--config.text.vocab_size=64",
        "--config.checkpoint_every_steps=3",
    ]
    straight = ok(train(env, tmp_path / "straight", *shards, "--config.num_train_steps=5"))
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data/skipped_records"] == 2  # 40 clips: two passes over the 20 records, one bad
    assert f"key={BAD_KEY['garbage']}" in straight.stderr and "skipping bad record" in straight.stderr

    strict = train(
        env, tmp_path / "strict", *shards, "--config.num_train_steps=5", "--config.data.max_skipped_fraction=0"
    )
    assert strict.returncode == 2 and "Traceback" not in strict.stderr, strict.stderr[-3000:]
    last = strict.stderr.strip().splitlines()[-1]  # after the warning that names the record
    assert last.startswith("stiv-train: error: 1 of the ") and "more than config.data.max_skipped_fraction=0" in last

    ok(train(env, tmp_path / "resumed", *shards, "--config.num_train_steps=3"))
    ok(train(env, tmp_path / "resumed", *shards, "--config.num_train_steps=5", "--config.data.num_workers=2"))
    losses = lambda wd: [json.loads(line)["loss"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
