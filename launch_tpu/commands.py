"""The gcloud command lines and worker shell scripts of a pod launch (pure functions, no I/O).

Every function returns either an argv list (run locally, without a shell) or a shell string
that `gcloud compute tpus tpu-vm ssh --worker=all --command=...` runs on every TPU VM. Values
that come from the user are shlex-quoted into those strings; the worker-side paths below are
left unquoted so that the worker's shell expands `$HOME`.

Worker layout (one training run per slice): the code is unpacked into `$HOME/stiv_jax`, the
Python environment lives in `$HOME/stiv_venv` (uv-managed CPython, since TPU VM images ship an
older system Python than the package needs), and `stiv-train` runs detached under nohup, with
its pid in `$HOME/stiv_train.pid` and its output appended to `$HOME/stiv_train.log`.

Training data in a bucket is read through a read-only Cloud Storage FUSE mount, by the rule the
trainer implements in `stiv_jax/storage/paths.py`: `gs://BUCKET/PATH` is read at
`$STIV_GCSFUSE_ROOT/BUCKET/PATH` (default root /tmp/gcsfuse). `gcsfuse_mount_script` mounts
each data bucket there on every worker before stiv-train starts.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence

from launch_tpu import slices
from launch_tpu.slices import Slice

CODE_DIR = "$HOME/stiv_jax"
VENV = "$HOME/stiv_venv"
LOG = "$HOME/stiv_train.log"
PID = "$HOME/stiv_train.pid"
UV = "$HOME/.local/bin/uv"
# The trainer's FUSE rule (stiv_jax.storage.paths): gs://B/P is read at $STIV_GCSFUSE_ROOT/B/P
GCSFUSE_ROOT_ENV = "STIV_GCSFUSE_ROOT"
DEFAULT_GCSFUSE_ROOT = "/tmp/gcsfuse"  # = stiv_jax.storage.paths.DEFAULT_GCSFUSE_ROOT
DATA_PATH_FLAG = "--config.data.path"
TARBALL_EXCLUDES = (".git", ".venv", "outputs", "__pycache__", "*.egg-info", ".pytest_cache")

# Lifecycle states reported by `describe --format=value(state...)`.
QR_READY, VM_READY = "ACTIVE", "READY"
QR_RECREATE = frozenset({"SUSPENDING", "SUSPENDED", "FAILED"})  # spot preemption -> SUSPENDED
VM_RECREATE = frozenset({"PREEMPTED", "TERMINATED"})
QR_PENDING = frozenset({"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING"})
VM_PENDING = frozenset({"CREATING", "STARTING", "RESTARTING", "REPAIRING"})
_TPU_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
        return ["gcloud", "compute", "tpus", group, verb, self.name, f"--zone={self.zone}", f"--project={self.project}"]


def parse_slice(accelerator_type: str) -> Slice:
    try:
        return slices.parse(accelerator_type)
    except ValueError as e:
        raise ValueError(f"--accelerator-type: {e}") from None


def check_tpu_name(name: str) -> None:
    if not _TPU_NAME.match(name):
        raise ValueError(
            f"--tpu-name {name!r} is not a valid TPU name (lowercase letters, digits "
            "and hyphens, starting with a letter, at most 63 characters)"
        )


def workdir_uri(bucket: str, run_name: str) -> str:
    """The run's workdir gs://BUCKET[/PREFIX]/RUN_NAME; ValueError (naming the flag) if bad."""
    if not _RUN_NAME.match(run_name):
        raise ValueError(f"--run-name {run_name!r}: use letters, digits, '.', '_' and '-'")
    uri = bucket.strip().rstrip("/")
    uri = uri if uri.startswith("gs://") else f"gs://{uri}"
    if uri == "gs://" or any(c.isspace() for c in uri):
        raise ValueError(f"--bucket {bucket!r} is not a gs:// bucket")
    return f"{uri}/{run_name}"


def create(
    target: Target,
    slice_: Slice,
    *,
    runtime_version: str,
    spot: bool = False,
    reserved: bool = False,
    valid_until: str | None = None,
) -> list[str]:
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
    cmd = [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        target.name,
        f"--zone={target.zone}",
        f"--project={target.project}",
        f"--worker={worker}",
    ]
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


_NOT_RUNNING = (
    f'if [ -f {PID} ] && kill -0 "$(cat {PID})" 2>/dev/null; then '
    f'echo "$(hostname): stiv-train is running (pid $(cat {PID})); '
    'run launch.py stop first" >&2; exit 1; fi'
)


def install_script(code: str, python_version: str) -> str:
    """Worker script: fetch the code snapshot, unpack it, `pip install -e .[tpu]` into a venv."""
    return " && ".join(
        [
            _NOT_RUNNING,
            f"gcloud storage cp {shlex.quote(code)} /tmp/stiv_jax.tar.gz",
            f"rm -rf {CODE_DIR}",
            f"mkdir -p {CODE_DIR}",
            f"tar -xzf /tmp/stiv_jax.tar.gz -C {CODE_DIR}",
            f"([ -x {UV} ] || curl -LsSf https://astral.sh/uv/install.sh | sh)",
            f"{UV} venv --quiet --allow-existing --python {shlex.quote(python_version)} {VENV}",
            f'{UV} pip install --quiet --python {VENV}/bin/python -e "{CODE_DIR}[tpu]"',
            f"echo \"$(hostname): installed jax $({VENV}/bin/python -c 'import jax; print(jax.__version__)')\"",
        ]
    )


def train_args(
    config: str,
    workdir: str,
    slice_: Slice,
    *,
    distributed_key: str | None,
    mesh_overrides: bool,
    extra: Sequence[str] = (),
) -> list[str]:
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
        defaults.update({"config.mesh.data": "1", "config.mesh.fsdp": str(slice_.chips), "config.mesh.tensor": "1"})
    given = {arg[2:].split("=", 1)[0] for arg in extra if arg.startswith("--")}
    args = [f"--config={config}", f"--workdir={workdir}"]
    args += [f"--{key}={value}" for key, value in defaults.items() if key not in given]
    return args + list(extra)


def train_script(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Worker script: start stiv-train detached (survives the ssh session), log to LOG."""
    env_items = shlex.join(["PYTHONUNBUFFERED=1", *(f"{k}={v}" for k, v in env.items())])
    launch = f"nohup env {env_items} {VENV}/bin/stiv-train {shlex.join(args)}"
    return " && ".join(
        [
            f"cd {CODE_DIR}",
            _NOT_RUNNING,
            f"({launch} >> {LOG} 2>&1 < /dev/null & echo $! > {PID})",
            f'echo "$(hostname): started stiv-train, pid $(cat {PID}), log {LOG}"',
        ]
    )


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


# ---------------------------------------------------------------------------------------------
# Training data in a bucket: read-only Cloud Storage FUSE mounts

_GCS_URL = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(/.*)?")
GCSFUSE_KEYRING = "/usr/share/keyrings/cloud.google.asc"
_APT = "sudo apt-get -o DPkg::Lock::Timeout=600"  # a fresh VM may be upgrading itself


def gcs_bucket(url: str) -> str:
    """The bucket of `gs://BUCKET[/PATH]`; ValueError for anything else."""
    match = _GCS_URL.fullmatch(url)
    if not match:
        raise ValueError(f"{url!r} is not gs://BUCKET[/PATH]")
    return match.group(1)


def data_buckets(extra: Sequence[str], mounts: Sequence[str] = ()) -> list[str]:
    """The buckets to mount, each once: the bucket of a gs:// `--config.data.path` given to
    stiv-train (`--config.data.path=gs://B/P` or `--config.data.path gs://B/P`), then those of
    the `mounts` URLs. ValueError, naming the flag, for a gs:// value that is not one."""
    urls = []
    for arg, following in zip(extra, [*extra[1:], ""]):
        flag, sep, value = arg.partition("=")
        if flag == DATA_PATH_FLAG and (value if sep else following).startswith("gs://"):
            urls.append((flag, value if sep else following))
    buckets: list[str] = []
    for flag, url in urls + [("--mount", url) for url in mounts]:
        try:
            bucket = gcs_bucket(url)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
        if bucket not in buckets:
            buckets.append(bucket)
    return buckets


def gcsfuse_root(root: str, file_cache_mb: int = 0, env: Sequence[tuple[str, str]] = ()) -> str:
    """The mount root without a trailing '/'; ValueError for a bad root, cache size or an
    `--env STIV_GCSFUSE_ROOT=...`, which the root sets."""
    root = root.rstrip("/")
    if not root.startswith("/"):
        raise ValueError(f"--gcsfuse-root {root or '/'!r} is not an absolute path below /")
    if file_cache_mb < -1:
        raise ValueError("--gcsfuse-file-cache-mb: MiB, -1 for no limit, 0 for no file cache")
    if any(key == GCSFUSE_ROOT_ENV for key, _ in env):
        raise ValueError(f"--env {GCSFUSE_ROOT_ENV}: set the mount root with --gcsfuse-root")
    return root


def gcsfuse_args(bucket: str, mount_dir: str, *, file_cache_mb: int = 0, cache_dir: str | None = None) -> list[str]:
    """The gcsfuse argv of one read-only data mount.

    The data does not change while a run reads it, so the metadata caches (stat and type caches,
    their TTL) are unlimited and each file is looked up in the bucket once. `file_cache_mb`
    (MiB, -1 for no limit; 0: off) adds a local file cache in `cache_dir` that also caches a
    whole file on a read that does not start at offset 0, since Grain reads records at random
    offsets of the ArrayRecord shards.
    """
    args = [
        "gcsfuse",
        "-o",
        "ro",
        "--implicit-dirs",
        "--metadata-cache-ttl-secs=-1",
        "--stat-cache-max-size-mb=-1",
        "--type-cache-max-size-mb=-1",
    ]
    if file_cache_mb:
        args += [
            f"--file-cache-max-size-mb={int(file_cache_mb)}",
            f"--cache-dir={cache_dir}",
            "--file-cache-cache-file-for-range-read=true",
        ]
    return args + [bucket, mount_dir]


def gcsfuse_mount_script(buckets: Sequence[str], root: str = DEFAULT_GCSFUSE_ROOT, *, file_cache_mb: int = 0) -> str:
    """Worker script: install gcsfuse if missing (Google's apt repository), then mount each
    bucket read-only at ROOT/BUCKET unless something is mounted there already."""
    root = root.rstrip("/")
    steps = [
        "command -v gcsfuse >/dev/null || { "
        'echo "$(hostname): installing gcsfuse" && codename=$(lsb_release -c -s) && '
        f'echo "deb [signed-by={GCSFUSE_KEYRING}] https://packages.cloud.google.com/apt '
        'gcsfuse-$codename main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && '
        f"sudo curl -fsSL -o {GCSFUSE_KEYRING} "
        "https://packages.cloud.google.com/apt/doc/apt-key.gpg && "
        f"{_APT} update -qq && {_APT} install -y -qq gcsfuse; }}"
    ]
    for bucket in buckets:
        mount_dir = f"{root}/{bucket}"
        cache_dir = f"{root}-cache/{bucket}" if file_cache_mb else None
        mount = shlex.join(gcsfuse_args(bucket, mount_dir, file_cache_mb=file_cache_mb, cache_dir=cache_dir))
        mkdir = shlex.join(["mkdir", "-p", mount_dir] + ([cache_dir] if cache_dir else []))
        steps += [
            mkdir,
            f"{{ mountpoint -q {shlex.quote(mount_dir)} || {mount}; }}",
            'echo "$(hostname):" ' + shlex.quote(f"gs://{bucket} is mounted read-only at {mount_dir}"),
        ]
    return " && ".join(steps)
