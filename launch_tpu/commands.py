"""The gcloud command lines and worker shell scripts of a pod launch (pure functions, no I/O).

Every function returns either an argv list (run locally, without a shell) or a shell string
that `gcloud compute tpus tpu-vm ssh --worker=all --command=...` runs on every TPU VM. Values
that come from the user are shlex-quoted into those strings; the worker-side paths below are
left unquoted so that the worker's shell expands `$HOME`.

Worker layout (one training run per slice): the code is unpacked into `$HOME/stiv_jax`, the
Python environment lives in `$HOME/stiv_venv` (uv-managed CPython, since TPU VM images ship an
older system Python than the package needs), and `stiv-train` runs detached under nohup, with
its pid in `$HOME/stiv_train.pid` and its output appended to `$HOME/stiv_train.log`.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Mapping, Sequence

from launch_tpu.slices import Slice

CODE_DIR = "$HOME/stiv_jax"
VENV = "$HOME/stiv_venv"
LOG = "$HOME/stiv_train.log"
PID = "$HOME/stiv_train.pid"
UV = "$HOME/.local/bin/uv"
TARBALL_EXCLUDES = (".git", ".venv", "outputs", "__pycache__", "*.egg-info", ".pytest_cache")

# Lifecycle states reported by `describe --format=value(state...)`.
QR_READY, VM_READY = "ACTIVE", "READY"
QR_RECREATE = frozenset({"SUSPENDING", "SUSPENDED", "FAILED"})  # spot preemption -> SUSPENDED
VM_RECREATE = frozenset({"PREEMPTED", "TERMINATED"})
QR_PENDING = frozenset({"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING"})
VM_PENDING = frozenset({"CREATING", "STARTING", "RESTARTING", "REPAIRING"})


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a slice lives. With `queued`, a queued resource and its node share `name`."""

    project: str
    zone: str
    name: str
    queued: bool = False
    internal_ip: bool = False

    @property
    def kind(self) -> str:
        return "queued resource" if self.queued else "TPU VM"

    @property
    def ready_state(self) -> str:
        return QR_READY if self.queued else VM_READY

    @property
    def preempted_state(self) -> str:
        return "SUSPENDED" if self.queued else "PREEMPTED"

    @property
    def recreate_states(self) -> frozenset[str]:
        return QR_RECREATE if self.queued else VM_RECREATE

    @property
    def pending_states(self) -> frozenset[str]:
        return QR_PENDING if self.queued else VM_PENDING

    def _gcloud(self, verb: str) -> list[str]:
        group = "queued-resources" if self.queued else "tpu-vm"
        return ["gcloud", "compute", "tpus", group, verb, self.name,
                f"--zone={self.zone}", f"--project={self.project}"]


def create(target: Target, slice_: Slice, *, runtime_version: str, spot: bool = False,
           reserved: bool = False, valid_until: str | None = None) -> list[str]:
    """`tpu-vm create`, or `queued-resources create --node-id` (queued: waits for capacity)."""
    cmd = target._gcloud("create")
    if target.queued:
        cmd.append(f"--node-id={target.name}")
    cmd.append(f"--accelerator-type={slice_.accelerator_type}")
    cmd.append(f"--{'runtime-version' if target.queued else 'version'}={runtime_version}")
    if spot:
        cmd.append("--spot")
    if reserved:
        cmd.append("--reserved")
    if valid_until:
        if not target.queued:
            raise ValueError("--valid-until-duration needs a queued resource (--queued)")
        cmd.append(f"--valid-until-duration={valid_until}")
    return cmd


def describe(target: Target, *, state_only: bool = False) -> list[str]:
    cmd = target._gcloud("describe")
    if state_only:
        cmd.append(f"--format=value({'state.state' if target.queued else 'state'})")
    return cmd


def delete(target: Target, *, quiet: bool) -> list[str]:
    """Deletes the slice; for a queued resource `--force` also deletes its TPU VMs."""
    cmd = target._gcloud("delete")
    if target.queued:
        cmd.append("--force")
    if quiet:
        cmd.append("--quiet")
    return cmd


def ssh(target: Target, command: str, *, worker: str = "all") -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", target.name, f"--zone={target.zone}",
           f"--project={target.project}", f"--worker={worker}"]
    if target.internal_ip:
        cmd.append("--internal-ip")
    return cmd + [f"--command={command}"]


def pack_code(repo_dir: str, tarball: str) -> list[str]:
    excludes = [f"--exclude={pattern}" for pattern in TARBALL_EXCLUDES]
    return ["tar", "-czf", tarball, *excludes, "-C", repo_dir, "."]


def upload(local: str, uri: str) -> list[str]:
    return ["gcloud", "storage", "cp", local, uri]


def code_uri(workdir: str) -> str:
    """The run's code snapshot lives next to its checkpoints, so a resume reuses it."""
    return f"{workdir}/code/stiv_jax.tar.gz"


_NOT_RUNNING = (f'if [ -f {PID} ] && kill -0 "$(cat {PID})" 2>/dev/null; then '
                f'echo "$(hostname): stiv-train is running (pid $(cat {PID})); '
                'run launch.py stop first" >&2; exit 1; fi')


def install_script(code: str, python_version: str) -> str:
    """Worker script: fetch the code snapshot, unpack it, `pip install -e .[tpu]` into a venv."""
    return " && ".join([
        _NOT_RUNNING,
        f"gcloud storage cp {shlex.quote(code)} /tmp/stiv_jax.tar.gz",
        f"rm -rf {CODE_DIR}",
        f"mkdir -p {CODE_DIR}",
        f"tar -xzf /tmp/stiv_jax.tar.gz -C {CODE_DIR}",
        f"([ -x {UV} ] || curl -LsSf https://astral.sh/uv/install.sh | sh)",
        f"{UV} venv --quiet --allow-existing --python {shlex.quote(python_version)} {VENV}",
        f'{UV} pip install --quiet --python {VENV}/bin/python -e "{CODE_DIR}[tpu]"',
        f'echo "$(hostname): installed jax $({VENV}/bin/python -c '
        "'import jax; print(jax.__version__)')\"",
    ])


def train_args(config: str, workdir: str, slice_: Slice, *, distributed_key: str | None,
               mesh_overrides: bool, extra: Sequence[str] = ()) -> list[str]:
    """The stiv-train argv: config, workdir, pod defaults, then the user's pass-through flags.

    Pod defaults are `--config.<distributed_key>=True` (the config switch that makes stiv-train
    call `jax.distributed.initialize()`) and a pure-FSDP mesh over every chip of the slice
    (`mesh.data=1, mesh.fsdp=<chips>, mesh.tensor=1`). A `--config.KEY=VALUE` in `extra`
    replaces the default for the same KEY.
    """
    defaults: dict[str, str] = {}
    if distributed_key:
        defaults[f"config.{distributed_key}"] = "True"
    if mesh_overrides:
        defaults.update({"config.mesh.data": "1", "config.mesh.fsdp": str(slice_.chips),
                         "config.mesh.tensor": "1"})
    given = {arg[2:].split("=", 1)[0] for arg in extra if arg.startswith("--")}
    args = [f"--config={config}", f"--workdir={workdir}"]
    args += [f"--{key}={value}" for key, value in defaults.items() if key not in given]
    return args + list(extra)


def train_script(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Worker script: start stiv-train detached (survives the ssh session), log to LOG."""
    env_items = shlex.join(["PYTHONUNBUFFERED=1", *(f"{k}={v}" for k, v in env.items())])
    launch = f"nohup env {env_items} {VENV}/bin/stiv-train {shlex.join(args)}"
    return " && ".join([
        f"cd {CODE_DIR}",
        _NOT_RUNNING,
        f"({launch} >> {LOG} 2>&1 < /dev/null & echo $! > {PID})",
        f'echo "$(hostname): started stiv-train, pid $(cat {PID}), log {LOG}"',
    ])


def stop_script(grace_seconds: int) -> str:
    """Worker script: SIGTERM stiv-train (it checkpoints and exits), SIGKILL after the grace."""
    return (
        f'if [ -f {PID} ] && kill -0 "$(cat {PID})" 2>/dev/null; then '
        f'p=$(cat {PID}); kill -TERM "$p"; echo "$(hostname): SIGTERM to $p"; '
        f'for _ in $(seq {int(grace_seconds)}); do kill -0 "$p" 2>/dev/null || break; sleep 1; '
        f'done; if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; '
        'echo "$(hostname): killed $p after the grace period"; fi; '
        'else echo "$(hostname): stiv-train is not running"; fi'
    )


def logs_script(lines: int, follow: bool) -> str:
    return f"tail -n {int(lines)}{' -F' if follow else ''} {LOG}"
