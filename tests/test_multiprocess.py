"""Multi-host training on one machine (issue 21): ``stiv-train`` as 2 JAX processes × 2 CPU
devices (``jax.distributed`` on 127.0.0.1, gloo collectives) against 1 process × 4 devices.

Every launch runs the installed console script with the ``distributed_*`` config keys, under one
deadline for all of its processes: a hang kills them all and fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.data_fixtures import demo_shards
from tests.train_utils import demo_tokenizer

REPO = Path(__file__).resolve().parents[1]
SLOW_COMPILE = Path(__file__).resolve().parent / "slow_compile"
BIN = Path(sys.executable).parent
BASE = [
    "--config=" + str(REPO / "experiments/tiny_synthetic.py"),
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=3",
    "--config.max_checkpoints_to_keep=5",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """``processes`` stiv-train processes with ``4 // processes`` CPU devices each; their output
    goes to files beside the workdir (pipes could fill up and block a process). ``slow_compile``
    (``NAME:SECONDS``): the last process compiles the XLA modules named ``*NAME*`` that much later
    than the others (tests/slow_compile), longer than CPU collectives wait for a peer (30 s)."""

    def __init__(self, workdir: Path, args: list[str], processes: int = 2, slow_compile: str = ""):
        workdir.parent.mkdir(parents=True, exist_ok=True)
        self.logs = [
            (workdir.parent / f"{workdir.name}.p{i}.out", workdir.parent / f"{workdir.name}.p{i}.err")
            for i in range(processes)
        ]
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "JAX_NUM_CPU_DEVICES": str(4 // processes),
            "PYTHONUNBUFFERED": "1",
        }
        port = _port()
        self.procs = []
        for i in range(processes):
            dist = (
                []
                if processes == 1
                else [
                    "--config.distributed=True",
                    f"--config.distributed_coordinator=127.0.0.1:{port}",
                    f"--config.distributed_num_processes={processes}",
                    f"--config.distributed_process_id={i}",
                ]
            )
            path = os.pathsep.join(filter(None, [str(SLOW_COMPILE), os.environ.get("PYTHONPATH")]))
            slow = {"STIV_TEST_SLOW_COMPILE": slow_compile, "PYTHONPATH": path}
            out, err = self.logs[i]
            with open(out, "w") as o, open(err, "w") as e:
                self.procs.append(
                    subprocess.Popen(
                        [str(BIN / "stiv-train"), *BASE, f"--workdir={workdir}", *args, *dist],
                        env={**env, **slow} if slow_compile and i == processes - 1 else env,
                        cwd=REPO,
                        stdout=o,
                        stderr=e,
                    )
                )

    def stdout(self, i: int) -> str:
        return self.logs[i][0].read_text()

    def wait(self, timeout: float = 420) -> list[tuple[int, str, str]]:
        deadline = time.monotonic() + timeout
        try:
            for p in self.procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in self.procs:
                p.kill()
            pytest.fail(f"processes still running after {timeout} s: a hang")
        return [(p.returncode, out.read_text(), err.read_text()) for p, (out, err) in zip(self.procs, self.logs)]


def run(workdir, *args, processes=2, timeout=420, slow_compile="") -> list[tuple[int, str, str]]:
    results = Launch(workdir, list(args), processes, slow_compile).wait(timeout)
    for rc, out, err in results:
        assert rc == 0, f"exit {rc}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
    return results


def losses(workdir: Path) -> list[float]:
    """Loss per step from metrics.jsonl; exactly one row per step is required."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, len(rows) + 1)), steps
    return [r["loss"] for r in rows]


def resume_copy(src: Path, dst: Path, step: int) -> Path:
    """A copy of a finished run cut back to its checkpoint at ``step`` (later ones and their log
    rows removed), as if it had stopped there."""
    shutil.copytree(src, dst)
    for d in (dst / "checkpoints").iterdir():
        if d.name.isdigit() and int(d.name) > step:
            shutil.rmtree(d)
    rows = (dst / "metrics.jsonl").read_text().splitlines()
    (dst / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= step))
    return dst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """6 steps on 1 process × 4 devices (checkpoints at 3 and 6)."""
    wd = tmp_path_factory.mktemp("one") / "run"
    run(wd, "--config.num_train_steps=6", processes=1)
    return wd


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Process 1 compiles the train step 35 s after process 0: process 0 waits for it."""
    wd = tmp_path_factory.mktemp("two") / "run"
    return wd, run(wd, "--config.num_train_steps=6", slow_compile="train_step:35")


def test_two_processes_match_one_and_log_once(reference, two_processes):
    wd, results = two_processes
    np.testing.assert_allclose(losses(wd), losses(reference), rtol=1e-5)
    (_, out0, _), (_, out1, err1) = results
    assert "slow_compile: jit_train_step takes 35 s longer" in err1
    assert out0.count("step 6/6") == 1 and "step " not in out1  # process 0 prints, process 1 does not
    assert {p.name for p in (wd / "checkpoints" / "6" / "state").iterdir()} >= {"ocdbt.process_0", "ocdbt.process_1"}


def test_resume_in_two_processes_is_bit_identical(two_processes, tmp_path):
    wd, _ = two_processes
    resumed = resume_copy(wd, tmp_path / "run", 3)
    (_, out0, _), (_, out1, _) = run(resumed, "--config.num_train_steps=6")
    assert "Resumed from" in out0 and "Resumed from" not in out1
    assert losses(resumed) == losses(wd)


def test_resume_on_another_process_count_continues_the_same_stream(two_processes, reference, tmp_path):
    wd, _ = two_processes
    resumed = resume_copy(wd, tmp_path / "run", 3)
    run(resumed, "--config.num_train_steps=6", processes=1)  # 2 × 2 → 1 × 4 devices
    np.testing.assert_allclose(losses(resumed), losses(reference), rtol=1e-5)
    np.testing.assert_allclose(losses(resumed)[3:], losses(wd)[3:], rtol=1e-5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_one_process_stops_both_at_one_checkpoint(tmp_path, sig):
    """SIGTERM goes through JAX's preemption service, SIGINT through the agreed flag."""
    wd = tmp_path / "run"
    launch = Launch(wd, ["--config.num_train_steps=400", "--config.checkpoint_every_steps=1000"])
    deadline = time.monotonic() + 360  # start-up and compile; generous on a loaded 2-core box
    while "\nstep 5/" not in "\n" + launch.stdout(0):  # process 0's log; the signal goes to process 1 only
        if launch.procs[0].poll() is not None or time.monotonic() > deadline:
            launch.wait(1)
            pytest.fail("process 0 did not reach step 5: " + launch.logs[0][1].read_text()[-2000:])
        time.sleep(0.1)
    launch.procs[1].send_signal(sig)
    sent = time.monotonic()
    results = launch.wait(timeout=60)
    assert time.monotonic() - sent < 60
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    out0 = results[0][1]
    stopped = int(out0.split("saved checkpoint at step ")[1].split()[0])
    assert 5 <= stopped < 400
    steps = sorted(int(d.name) for d in (wd / "checkpoints").iterdir() if d.name.isdigit())
    assert steps == [stopped]  # one checkpoint, written by both processes together
    state = wd / "checkpoints" / str(stopped) / "state"
    assert (state / "commit_success.txt").exists()
    assert {p.name for p in state.iterdir()} >= {"ocdbt.process_0", "ocdbt.process_1"}
    assert "saved checkpoint" not in results[1][1]


def test_nan_stop_is_the_same_in_both_processes(tmp_path):
    """lr 0 for step 1 (warmup), then a huge lr: the loss becomes NaN/inf. Both processes stop at
    the same step with the same message, and the checkpoint they agree on is finite."""
    wd = tmp_path / "run"
    results = Launch(
        wd,
        [
            "--config.num_train_steps=30",
            "--config.checkpoint_every_steps=1",
            "--config.learning_rate=1e30",
            "--config.warmup_steps=1",
            "--config.optimizer.update_clip=0.0",
        ],
    ).wait(240)
    assert [rc for rc, _, _ in results] == [2, 2], [err[-2000:] for _, _, err in results]
    last = [err.strip().splitlines()[-1] for _, _, err in results]
    assert last[0] == last[1] and last[0].startswith("stiv-train: error: loss or gradient became NaN/inf at step ")
    good = int(last[0].split("last good checkpoint is step ")[1].split()[0])
    steps = sorted(int(d.name) for d in (wd / "checkpoints").iterdir() if d.name.isdigit())
    assert steps[-1] == good and (wd / "checkpoints" / str(good) / "state" / "commit_success.txt").exists()


def test_tensor_parallel_mesh_over_two_processes_trains_on_the_global_batch(reference, tmp_path):
    """fsdp=1 × tensor=4 replicates the batch: both processes read all 8 clips (it used to train
    on 4, with a 'replicated' loss that differed between processes), so the losses are those of
    the 1-process fsdp=4 reference (2e-7 apart on 2026-12-04; the losses of two batches differ by ~2%)."""
    wd = tmp_path / "run"
    run(wd, "--config.num_train_steps=6", "--config.mesh.fsdp=1", "--config.mesh.tensor=4")
    np.testing.assert_allclose(losses(wd), losses(reference), rtol=1e-5)


def test_evaluation_during_training_over_two_processes_matches_one(tmp_path):
    """eval_every_steps in a run whose EMA weights are sharded over both processes (fsdp over all 4
    devices): the same samples, hence the same FVD to the last digit, as 1 process × 4 devices;
    process 0 alone reports it."""
    spm = demo_tokenizer(tmp_path)
    evaluation = [
        "--config.num_train_steps=4",
        "--config.checkpoint_every_steps=100",
        "--config.eval_every_steps=2",
        f"--config.data.tokenizer_path={spm}",
        f"--config.eval.real_path={demo_shards()}",
        "--config.eval.num_real=4",
        "--config.eval.num_samples=4",
        "--config.eval.batch_size=4",
        "--config.sampling.steps=2",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    run(one, *evaluation, processes=1)
    (_, out0, _), (_, out1, _) = run(two, *evaluation)

    def fvds(wd: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["eval/fvd"] for r in rows if "eval/fvd" in r}

    assert sorted(fvds(two)) == [2, 4] and fvds(two) == fvds(one)
    assert out0.count("eval at step") == 2 and "eval at step" not in out1


def test_a_batch_that_does_not_split_over_the_mesh_fails_before_compiling(tmp_path):
    results = Launch(tmp_path / "run", ["--config.batch_size=6"], processes=1).wait(120)
    rc, _, err = results[0]
    assert rc == 2
    assert err.strip().splitlines()[-1] == (
        "stiv-train: error: config.batch_size=6 / grad_accum_steps=1 = 6 clips per step do not split over "
        "the batch axes: mesh data=1 × fsdp=4 = 4 (tensor=1)"
    )
    assert "Traceback" not in err


_READ_SHARDS = """
import json, sys
if __name__ == "__main__":
    import jax
    pid, count, port, shards, spm = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    if count > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=pid)
    from experiments.tiny_synthetic import get_config
    from stiv_jax.parallel.mesh import make_mesh
    from stiv_jax.train import data

    config = get_config()
    config.data.kind, config.data.path, config.data.tokenizer_path = "shards", shards, spm
    config.data.frame_strides = (1, 2)
    mesh = make_mesh(config.mesh)
    rows = data.process_rows(mesh, config.batch_size)
    it = data.make_iterator(config, rows=rows)
    print(json.dumps({"rows": rows.tolist(), "keys": [next(it)["key"].tolist() for _ in range(2)]}))
"""


def test_shard_readers_in_two_processes_split_the_one_process_stream():
    from tests.data_fixtures import demo_dir, demo_shards

    args = [str(demo_shards()), f"{demo_dir()}/spm.model"]
    port = str(_port())

    def start(pid, count):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(4 // count)}
        return subprocess.Popen(
            [sys.executable, "-c", _READ_SHARDS, str(pid), str(count), port, *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(proc):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    pair = [start(0, 2), start(1, 2)]
    halves = [result(p) for p in pair]
    whole = result(start(0, 1))
    assert [h["rows"] for h in halves] == [[0, 1, 2, 3], [4, 5, 6, 7]] and whole["rows"] == list(range(8))
    a, b, w = (sum(part["keys"], []) for part in (*halves, whole))  # global batches 0 and 1
    assert len(w) == 16 == len(set(w))  # within the first pass over the 20 demo records
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(w)
    assert [halves[0]["keys"][k] + halves[1]["keys"][k] for k in range(2)] == whole["keys"]
