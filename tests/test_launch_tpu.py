"""launch_tpu/launch.py: dry-run command lines for v5e-256 / v5p-128 launches, resume logic.

The launcher runs as a subprocess with a PATH holding only booby-trapped `gcloud` and `tar`
(they record every call), so a dry run that executed anything would be caught; the resume
tests drive the real execution path against a scripted fake gcloud.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch_tpu import commands, slices

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch_tpu" / "launch.py"
CONFIG = "experiments/t2v_m_512.py"
WHERE = ["--project=proj-x", "--zone=zone-y", "--bucket=gs://bucket-z/runs", "--run-name=run-1"]
WORKDIR = "gs://bucket-z/runs/run-1"
CODE = f"{WORKDIR}/code/stiv_jax.tar.gz"

FAKE_TOOL = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
    states = json.load(open(os.environ["FAKE_STATES"]))
    state = states.pop(0) if len(states) > 1 else states[0]
    json.dump(states, open(os.environ["FAKE_STATES"], "w"))
    if state == "NOT_FOUND":
        sys.exit("ERROR: (gcloud.compute.tpus) NOT_FOUND: Resource not found")
    print(state)
"""


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH with recording `gcloud` and `tar` (no real ones); returns env, calls, set_states."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "tar"):
        (bin_dir / tool).write_text(FAKE_TOOL.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))  # for the bash wrappers
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIV_")}
    env.update(PATH=str(bin_dir), FAKE_LOG=str(tmp_path / "calls.jsonl"), FAKE_STATES=str(tmp_path / "states.json"))

    def calls():
        log = tmp_path / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def set_states(*states):
        (tmp_path / "states.json").write_text(json.dumps(list(states)))

    return env, calls, set_states


def launch(env, *argv, extra_env=None):
    return subprocess.run(
        [sys.executable, str(LAUNCH), *argv],
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def dry_run(fake_bin, *argv, extra_env=None):
    """Runs a dry run; returns (argv lists of the printed commands, '#' notes)."""
    env, calls, _ = fake_bin
    split = argv.index("--") if "--" in argv else len(argv)  # after `--` is stiv-train's
    proc = launch(env, *argv[:split], "--dry-run", *argv[split:], extra_env=extra_env)
    assert proc.returncode == 0, proc.stderr
    assert calls() == [], "a dry run must execute nothing"
    lines = proc.stdout.splitlines()
    cmds = [shlex.split(line) for line in lines if line and not line.startswith("#")]
    return cmds, [line for line in lines if line.startswith("#")]


def flags(cmd):
    """--key=value / --switch options of an argv, as a dict."""
    return dict((a[2:].split("=", 1) + [True])[:2] for a in cmd if a.startswith("--"))


def shell_tokens(script):
    """A worker script split like the shell does, with `;`, `&&`, `||`, `|`, ... as tokens."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def gcsfuse_argvs(script):
    """The argv of every `gcsfuse` command (in command position) of a worker script."""
    tokens, argvs = shell_tokens(script), []
    for i, token in enumerate(tokens):
        if token == "gcsfuse" and (i == 0 or tokens[i - 1] in {"||", "&&", ";", "{", "("}):
            end = next(
                j for j in range(i, len(tokens) + 1) if j == len(tokens) or tokens[j] in {";", "&&", "||", "}", ")"}
            )
            argvs.append(tokens[i:end])
    return argvs


def stiv_train_argv(ssh_cmd):
    """The stiv-train argv inside the worker script of a `tpu-vm ssh --command=...`."""
    tokens = shlex.split(flags(ssh_cmd)["command"])
    start = next(i for i, t in enumerate(tokens) if t.endswith("/stiv-train")) + 1
    return tokens[start : tokens.index(">>")], tokens[:start]


def test_v5e_256_queued_resource_launch(fake_bin):
    cmds, notes = dry_run(
        fake_bin, "up", *WHERE, "--accelerator-type=v5e-256", "--queued", "--spot", f"--config={CONFIG}"
    )
    create, poll, pack, upload, install, train = cmds
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "run-1"]
    assert flags(create) == {
        "zone": "zone-y",
        "project": "proj-x",
        "node-id": "run-1",
        "accelerator-type": "v5litepod-256",
        "runtime-version": "v2-alpha-tpuv5-lite",
        "spot": True,
    }
    assert poll[3:6] == ["queued-resources", "describe", "run-1"]
    assert flags(poll)["format"] == "value(state.state)"
    assert pack[0] == "tar" and pack[-3:] == ["-C", str(REPO), "."]
    assert "--exclude=.git" in pack and "--exclude=.venv" in pack
    assert upload == ["gcloud", "storage", "cp", pack[2], CODE]
    for ssh in (install, train):
        assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "run-1"]
        assert {k: flags(ssh)[k] for k in ("zone", "project", "worker")} == {
            "zone": "zone-y",
            "project": "proj-x",
            "worker": "all",
        }
    script = flags(install)["command"]
    assert f"gcloud storage cp {CODE} /tmp/stiv_jax.tar.gz" in script
    assert '-e "$HOME/stiv_jax[tpu]"' in script
    argv, prefix = stiv_train_argv(train)
    assert argv == [
        f"--config={CONFIG}",
        f"--workdir={WORKDIR}",
        "--config.distributed=True",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=256",
        "--config.mesh.tensor=1",
    ]
    assert prefix[-3:] == ["env", "PYTHONUNBUFFERED=1", "$HOME/stiv_venv/bin/stiv-train"]
    assert "nohup" in prefix[-4]
    assert any("256 chips (16x16), 64 worker(s) x 4 chips" in n for n in notes)


def test_v5p_128_tpu_vm_launch_with_overrides(fake_bin):
    cmds, notes = dry_run(
        fake_bin,
        "up",
        *WHERE,
        "--accelerator-type=v5p-128",
        f"--config={CONFIG}",
        "--env=LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true",
        "--",
        "--config.batch_size=256",
        "--config.mesh.fsdp=32",
        "--config.mesh.tensor=2",
    )
    create, poll, _, _, install, train = cmds
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "run-1"]
    assert flags(create) == {
        "zone": "zone-y",
        "project": "proj-x",
        "accelerator-type": "v5p-128",
        "version": "v2-alpha-tpuv5",
    }
    assert flags(poll)["format"] == "value(state)"
    assert flags(install)["worker"] == flags(train)["worker"] == "all"
    argv, prefix = stiv_train_argv(train)
    assert argv == [
        f"--config={CONFIG}",
        f"--workdir={WORKDIR}",
        "--config.distributed=True",
        "--config.mesh.data=1",
        "--config.batch_size=256",
        "--config.mesh.fsdp=32",
        "--config.mesh.tensor=2",
    ]
    assert "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true" in prefix
    assert any("64 chips (4x4x4), 16 worker(s) x 4 chips" in n for n in notes)


def test_flags_from_environment_and_runtime_override(fake_bin):
    env = {"STIV_PROJECT": "env-proj", "STIV_ZONE": "env-zone", "STIV_TPU_NAME": "my-slice"}
    (create,), _ = dry_run(
        fake_bin,
        "create",
        "--accelerator-type=v5p-128",
        "--runtime-version=v2-alpha-tpuv5-custom",
        "--reserved",
        extra_env=env,
    )
    assert create[5] == "my-slice"
    assert flags(create) == {
        "zone": "env-zone",
        "project": "env-proj",
        "accelerator-type": "v5p-128",
        "version": "v2-alpha-tpuv5-custom",
        "reserved": True,
    }


def test_no_mesh_or_distributed_defaults(fake_bin):
    cmds, _ = dry_run(
        fake_bin,
        "train",
        *WHERE,
        "--accelerator-type=v5litepod-16",
        f"--config={CONFIG}",
        "--distributed-key=",
        "--no-mesh-overrides",
    )
    assert stiv_train_argv(cmds[0])[0] == [f"--config={CONFIG}", f"--workdir={WORKDIR}"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["up", "--zone=z", "--bucket=b", "--run-name=r", "--accelerator-type=v5p-128", f"--config={CONFIG}"],
            "missing --project (or $STIV_PROJECT)",
        ),
        (
            ["train", "--project=p", "--zone=z", "--run-name=r", "--accelerator-type=v5p-128"],
            "missing --bucket (or $STIV_BUCKET), --config",
        ),
        (["create", *WHERE, "--accelerator-type=v5p-3"], "2 TensorCores per chip"),
        (["create", *WHERE, "--accelerator-type=tpu-256"], "unknown accelerator type 'tpu-256'"),
        (
            ["create", *WHERE[:3], "--run-name=Run_1", "--accelerator-type=v5p-8"],
            "--tpu-name 'Run_1' is not a valid TPU name",
        ),
        (["delete", *WHERE, "--", "--config.x=1"], "only train, up and resume take them"),
        (
            ["resume", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--assume-state=ACTIVE"],
            "--assume-state only plans a --dry-run",
        ),
        (
            ["train", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--mount=data-bkt"],
            "launch.py train: error: --mount: 'data-bkt' is not gs://BUCKET[/PATH]",
        ),
        (
            ["up", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--mount=gs://Bad_Bkt"],
            "launch.py up: error: --mount: 'gs://Bad_Bkt' is not gs://BUCKET[/PATH]",
        ),
        (
            ["train", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--", "--config.data.path=gs://"],
            "error: --config.data.path: 'gs://' is not gs://BUCKET",
        ),
        (
            ["train", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--gcsfuse-root=mnt"],
            "error: --gcsfuse-root 'mnt' is not an absolute path",
        ),
        (
            ["train", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--env=STIV_GCSFUSE_ROOT=/x"],
            "error: --env STIV_GCSFUSE_ROOT: set the mount root with",
        ),
    ],
)
def test_bad_flags_are_clear_errors(fake_bin, argv, message):
    env, calls, _ = fake_bin
    proc = launch(env, *argv)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert calls() == []


MOUNT_FLAGS = [
    "-o",
    "ro",
    "--implicit-dirs",
    "--metadata-cache-ttl-secs=-1",
    "--stat-cache-max-size-mb=-1",
    "--type-cache-max-size-mb=-1",
]


def test_gs_data_path_is_mounted_on_every_worker_before_training(fake_bin):
    cmds, _ = dry_run(
        fake_bin,
        "up",
        *WHERE,
        "--accelerator-type=v5litepod-256",
        "--queued",
        f"--config={CONFIG}",
        "--",
        "--config.data.path=gs://data-bkt/shards",
    )
    create, poll, pack, upload, install, mount, train = cmds
    assert [c[4] for c in (install, mount, train)] == ["ssh", "ssh", "ssh"]
    assert flags(mount)["worker"] == "all" and flags(train)["worker"] == "all"
    script = flags(mount)["command"]
    assert "stiv-train" not in script
    tokens = shell_tokens(script)
    assert tokens[:4] == ["command", "-v", "gcsfuse", ">"]  # installs gcsfuse only if missing
    assert "gcsfuse-$codename main" in script and "apt-get" in script
    assert " ".join(["mkdir", "-p", "/tmp/gcsfuse/data-bkt"]) in script
    assert "mountpoint -q /tmp/gcsfuse/data-bkt ||" in script
    assert gcsfuse_argvs(script) == [["gcsfuse", *MOUNT_FLAGS, "data-bkt", "/tmp/gcsfuse/data-bkt"]]
    assert "cache-dir" not in script  # no file cache unless asked for
    argv, prefix = stiv_train_argv(train)
    assert argv[-1] == "--config.data.path=gs://data-bkt/shards"
    assert prefix[-4:] == [
        "env",
        "PYTHONUNBUFFERED=1",
        "STIV_GCSFUSE_ROOT=/tmp/gcsfuse",
        "$HOME/stiv_venv/bin/stiv-train",
    ]


def test_mount_flags_root_and_file_cache(fake_bin):
    cmds, notes = dry_run(
        fake_bin,
        "train",
        *WHERE,
        "--accelerator-type=v5p-128",
        f"--config={CONFIG}",
        "--mount=gs://cfg-bkt",
        "--mount=gs://two-bkt/other",
        "--gcsfuse-root=/mnt/gcs/",
        "--gcsfuse-file-cache-mb=4096",
        "--env=FOO=1",
        "--",
        "--config.data.path",
        "gs://two-bkt/shards",
        "--config.batch_size=64",
    )
    mount, train = cmds
    assert flags(mount)["worker"] == "all"
    cache = [
        "--file-cache-max-size-mb=4096",
        "--cache-dir=/mnt/gcs-cache/{}",
        "--file-cache-cache-file-for-range-read=true",
    ]
    assert gcsfuse_argvs(flags(mount)["command"]) == [  # the data path's bucket, then --mount's
        ["gcsfuse", *MOUNT_FLAGS, *(f.format(b) for f in cache), b, f"/mnt/gcs/{b}"] for b in ("two-bkt", "cfg-bkt")
    ]
    argv, prefix = stiv_train_argv(train)
    assert argv[-3:] == ["--config.data.path", "gs://two-bkt/shards", "--config.batch_size=64"]
    assert prefix[-5:-1] == ["env", "PYTHONUNBUFFERED=1", "FOO=1", "STIV_GCSFUSE_ROOT=/mnt/gcs"]
    assert not any("nothing to mount" in n for n in notes)


@pytest.mark.parametrize("extra", [[], ["--", "--config.data.path=/data/shards"]])
def test_no_gs_data_path_no_mount(fake_bin, extra):
    cmds, notes = dry_run(fake_bin, "train", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", *extra)
    (train,) = cmds
    argv, prefix = stiv_train_argv(train)
    assert "STIV_GCSFUSE_ROOT" not in " ".join(prefix) and "gcsfuse" not in flags(train)["command"]
    assert any("nothing to mount: no gs:// --config.data.path" in n for n in notes)


def test_bad_mount_is_a_one_line_error(fake_bin):
    env, calls, _ = fake_bin
    proc = launch(env, "up", *WHERE, "--accelerator-type=v5p-8", f"--config={CONFIG}", "--mount=/data/shards")
    assert proc.returncode == 2 and calls() == []
    assert proc.stderr.splitlines()[-1] == ("launch.py up: error: --mount: '/data/shards' is not gs://BUCKET[/PATH]")


def test_default_gcsfuse_root_is_the_trainers():
    """The launcher mounts where the trainer reads: one default root on both sides."""
    from stiv_jax.storage.paths import DEFAULT_GCSFUSE_ROOT

    assert commands.DEFAULT_GCSFUSE_ROOT == DEFAULT_GCSFUSE_ROOT


def test_resume_dry_run_after_preemption(fake_bin):
    base = ["resume", *WHERE, "--accelerator-type=v5litepod-256", "--queued", "--spot", f"--config={CONFIG}"]
    cmds, notes = dry_run(fake_bin, *base)
    verbs = [(c[3], c[4]) if c[0] == "gcloud" else (c[0],) for c in cmds]
    assert verbs == [
        ("queued-resources", "delete"),
        ("queued-resources", "create"),
        ("queued-resources", "describe"),
        ("tpu-vm", "ssh"),
        ("tpu-vm", "ssh"),
    ]
    assert {"force", "quiet"} <= flags(cmds[0]).keys()
    assert flags(cmds[1])["spot"] is True
    assert f"gcloud storage cp {CODE} " in flags(cmds[3])["command"]  # the run's own snapshot
    assert stiv_train_argv(cmds[4])[0][:2] == [f"--config={CONFIG}", f"--workdir={WORKDIR}"]
    assert any("assuming the queued resource is SUSPENDED" in n for n in notes)

    cmds, _ = dry_run(fake_bin, *base, "--assume-state=ACTIVE")
    assert [c[4] for c in cmds] == ["describe", "ssh", "ssh"]


@pytest.mark.parametrize(
    "states, expected",
    [
        (
            ["SUSPENDED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"],
            ["describe", "delete", "create", "describe", "describe", "describe", "ssh", "ssh"],
        ),
        (["NOT_FOUND", "ACTIVE"], ["describe", "create", "describe", "ssh", "ssh"]),
        (["ACTIVE"], ["describe", "describe", "ssh", "ssh"]),
    ],
)
def test_resume_executes_the_right_sequence(fake_bin, states, expected):
    env, calls, set_states = fake_bin
    set_states(*states)
    proc = launch(
        env, "resume", *WHERE, "--accelerator-type=v5litepod-256", "--queued", f"--config={CONFIG}", "--poll-seconds=0"
    )
    assert proc.returncode == 0, proc.stderr
    log = calls()
    assert all(c[0] == "gcloud" for c in log)  # no tar: a resume reuses the uploaded code
    assert [c[4] for c in log] == expected
    assert flags(log[-1])["worker"] == "all" and "stiv-train" in flags(log[-1])["command"]


@pytest.mark.parametrize(
    "states, extra, message",
    [
        (["DELETING"], [], "cannot resume queued resource run-1 from state DELETING"),
        (["NOT_FOUND", "FAILED"], [], "queued resource run-1 is FAILED; it will not become ACTIVE"),
        (["NOT_FOUND", "WAITING_FOR_RESOURCES"], ["--wait-timeout=0.01"], "still WAITING_FOR_RESOURCES after 0.01s"),
    ],
)
def test_resume_failures_stop_before_training(fake_bin, states, extra, message):
    env, calls, set_states = fake_bin
    set_states(*states)
    proc = launch(
        env, "resume", *WHERE, "--accelerator-type=v6e-64", f"--config={CONFIG}", "--queued", "--poll-seconds=0", *extra
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "ssh" not in [c[4] for c in calls()]


def test_logs_stop_status_delete(fake_bin):
    where = WHERE[:2] + ["--tpu-name=slice-a"]
    (logs,), _ = dry_run(fake_bin, "logs", *where, "--worker=all", "--lines=50")
    assert flags(logs)["worker"] == "all"
    assert flags(logs)["command"] == "tail -n 50 -F $HOME/stiv_train.log"
    (stop,), _ = dry_run(fake_bin, "stop", *where, "--grace-seconds=30")
    assert 'kill -TERM "$p"' in flags(stop)["command"] and "seq 30" in flags(stop)["command"]
    (status,), _ = dry_run(fake_bin, "status", *where, "--queued")
    assert status[3:6] == ["queued-resources", "describe", "slice-a"]
    (delete,), _ = dry_run(fake_bin, "delete", *where, "--queued")
    assert delete[3:6] == ["queued-resources", "delete", "slice-a"] and "--force" in delete
    assert "--quiet" not in delete  # gcloud asks to confirm unless --yes
    (delete,), _ = dry_run(fake_bin, "delete", *where, "--yes")
    assert delete[3:5] == ["tpu-vm", "delete"] and "--quiet" in delete


@pytest.mark.parametrize(
    "script, accelerator, queued",
    [
        ("t2v_m_512_v5e256.sh", "v5litepod-256", True),
        ("t2v_m_512_v5p128.sh", "v5p-128", False),
    ],
)
def test_wrapper_scripts(fake_bin, script, accelerator, queued):
    env, calls, _ = fake_bin
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "launch_tpu" / script), "up", *WHERE, "--dry-run"],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert calls() == []
    create = shlex.split(
        next(line for line in proc.stdout.splitlines() if not line.startswith("#"))
    )  # after the '#' notes
    assert create[3] == ("queued-resources" if queued else "tpu-vm")
    assert flags(create)["accelerator-type"] == accelerator
    assert f"--config={CONFIG}" in proc.stdout


FAKE_TRAINER = """#!{python}
import signal, sys, time
print("stiv-train", *sys.argv[1:], flush=True)
signal.signal(signal.SIGTERM, lambda *_: (print("SIGTERM: checkpoint saved", flush=True),
                                          sys.exit(0)))
while True:
    time.sleep(0.05)
"""


def alive(pid: int) -> bool:
    """Running (an exited, not yet reaped orphan counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_scripts_run_detach_refuse_and_stop(tmp_path):
    """Runs the train/stop/logs worker scripts for real, with a fake stiv-train in $HOME."""
    home = tmp_path / "home"
    (home / "stiv_jax").mkdir(parents=True)
    trainer = home / "stiv_venv" / "bin" / "stiv-train"
    trainer.parent.mkdir(parents=True)
    trainer.write_text(FAKE_TRAINER.format(python=sys.executable))
    trainer.chmod(0o755)
    env = {**os.environ, "HOME": str(home)}

    def worker(script):
        assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0  # syntax
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)

    args = commands.train_args(
        CONFIG, WORKDIR, slices.parse("v5p-8"), distributed_key="x", mesh_overrides=False, extra=["--config.note=a b"]
    )
    started = worker(commands.train_script(args, {"FOO": "1"}))
    assert started.returncode == 0, started.stderr
    pid = int((home / "stiv_train.pid").read_text())
    assert alive(pid)  # still running after the launching shell has exited
    log = home / "stiv_train.log"
    for _ in range(100):
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    assert log.read_text().split("\n")[0] == " ".join(["stiv-train", *args])

    again = worker(commands.train_script(args, {}))
    assert again.returncode == 1 and f"stiv-train is running (pid {pid})" in again.stderr
    assert worker(commands.install_script(CODE, "3.12")).returncode == 1  # same guard

    stopped = worker(commands.stop_script(grace_seconds=5))
    assert stopped.returncode == 0 and f"SIGTERM to {pid}" in stopped.stdout
    assert not alive(pid)
    tail = worker(commands.logs_script(1, follow=False))
    assert tail.stdout == "SIGTERM: checkpoint saved\n"
    assert "not running" in worker(commands.stop_script(grace_seconds=1)).stdout


FAKE_WORKER_TOOL = """#!{python}
import json, os, sys
tool, args, fake = os.path.basename(sys.argv[0]), sys.argv[1:], os.environ["FAKE_DIR"]
stdin = sys.stdin.read() if tool == "sudo" and args[:1] == ["tee"] else None
with open(os.path.join(fake, "calls.jsonl"), "a") as f:
    f.write(json.dumps([tool, *args] + ([stdin] if stdin is not None else [])) + "\\n")
mounts = os.path.join(fake, "mounts")
mounted = open(mounts).read().splitlines() if os.path.exists(mounts) else []
if tool == "lsb_release":
    print("jammy")
elif tool == "mountpoint":
    sys.exit(0 if args[-1] in mounted else 1)
elif tool == "gcsfuse":
    if os.environ.get("FAKE_GCSFUSE_FAILS"):
        sys.exit("gcsfuse: mount failed")
    with open(mounts, "a") as f:
        f.write(args[-1] + "\\n")
elif tool == "sudo" and "install" in args and args[-1] == "gcsfuse":
    os.symlink(sys.argv[0], os.path.join(os.path.dirname(sys.argv[0]), "gcsfuse"))
"""


def test_worker_mount_script_installs_gcsfuse_and_mounts_once(tmp_path):
    """Runs the mount worker script for real with fake lsb_release/sudo/mountpoint/gcsfuse."""
    bin_dir, fake = tmp_path / "bin", tmp_path / "fake"
    bin_dir.mkdir()
    fake.mkdir()
    for tool in ("lsb_release", "sudo", "mountpoint"):  # no gcsfuse yet: it gets installed
        (bin_dir / tool).write_text(FAKE_WORKER_TOOL.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    for tool in ("mkdir", "hostname"):  # the only other programs the script may run
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_DIR": str(fake)}
    root = tmp_path / "gcs root"  # a space: every path must be quoted
    script = commands.gcsfuse_mount_script(["data-bkt", "cfg-bkt"], f"{root}/")

    def worker(**extra_env):
        assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0  # syntax
        return subprocess.run(
            [shutil.which("bash"), "-c", script], env={**env, **extra_env}, capture_output=True, text=True, timeout=30
        )

    def calls(tool):
        lines = (fake / "calls.jsonl").read_text().splitlines()
        return [c[1:] for c in map(json.loads, lines) if c[0] == tool]

    failed = worker(FAKE_GCSFUSE_FAILS="1")  # a failed mount fails the step (and the launch)
    assert failed.returncode != 0 and "mount failed" in failed.stderr
    assert "mounted read-only" not in failed.stdout
    sudo = calls("sudo")
    assert [
        "tee",
        "/etc/apt/sources.list.d/gcsfuse.list",
        "deb [signed-by=/usr/share/keyrings/cloud.google.asc] "
        "https://packages.cloud.google.com/apt gcsfuse-jammy main\n",
    ] in sudo
    assert any(c[0] == "curl" and "/usr/share/keyrings/cloud.google.asc" in c for c in sudo)
    assert sudo[-1][0] == "apt-get" and sudo[-1][-3:] == ["-y", "-qq", "gcsfuse"]
    assert (bin_dir / "gcsfuse").exists()

    first = worker()
    assert first.returncode == 0, first.stderr
    assert calls("sudo") == sudo  # installed already: no apt this time
    expected = [[*MOUNT_FLAGS, b, f"{root}/{b}"] for b in ("data-bkt", "cfg-bkt")]
    assert calls("gcsfuse")[1:] == expected
    assert (root / "data-bkt").is_dir() and (root / "cfg-bkt").is_dir()
    assert f"gs://data-bkt is mounted read-only at {root}/data-bkt" in first.stdout

    again = worker()  # mountpoint now says mounted: gcsfuse is not run again
    assert again.returncode == 0, again.stderr
    assert calls("gcsfuse")[1:] == expected
    assert calls("mountpoint")[-2:] == [["-q", f"{root}/data-bkt"], ["-q", f"{root}/cfg-bkt"]]


@pytest.mark.parametrize(
    "accelerator, chips, hosts, per_host, topology",
    [
        ("v5litepod-256", 256, 64, 4, "16x16"),
        ("v5litepod-8", 8, 1, 8, "2x4"),
        ("v5litepod-16", 16, 4, 4, "4x4"),
        ("v5p-8", 4, 1, 4, "2x2x1"),
        ("v5p-128", 64, 16, 4, "4x4x4"),
        ("v5p-256", 128, 32, 4, "4x4x8"),
        ("v5p-384", 192, 48, 4, None),
        ("v4-32", 16, 4, 4, "2x2x4"),
        ("v6e-256", 256, 64, 4, "16x16"),
    ],
)
def test_slice_shapes(accelerator, chips, hosts, per_host, topology):
    s = slices.parse(accelerator)
    assert (s.chips, s.hosts, s.chips_per_host, s.topology) == (chips, hosts, per_host, topology)
