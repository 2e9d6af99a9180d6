#!/usr/bin/env python3
"""Train stiv_jax on a Cloud TPU slice: create, install, train, logs, stop, resume, delete.

    python3 launch_tpu/launch.py up --project=P --zone=Z --accelerator-type=v5litepod-256 \\
        --queued --spot --bucket=gs://B --run-name=R --config=experiments/t2v_m_512.py

`up` = create the slice (a TPU VM, or with --queued a queued resource), wait until it is ready,
upload a snapshot of this checkout to gs://B/R/code/, install it on every worker and start
`stiv-train --workdir=gs://B/R` on every worker (`--worker=all`). After a preemption, `resume`
recreates the slice if needed, reinstalls the same snapshot and restarts training, which
restores the latest checkpoint in the workdir. `--dry-run` prints every command (shlex-quoted,
one per line; `#` lines are notes) and runs nothing. Arguments after `--` go to stiv-train.
Nothing is tied to one user: project, zone, bucket, ... come from flags or STIV_* variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `launch_tpu` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch_tpu import commands, slices  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV_VARS = {"project": "STIV_PROJECT", "zone": "STIV_ZONE", "name": "STIV_TPU_NAME",
            "accelerator_type": "STIV_ACCELERATOR_TYPE", "bucket": "STIV_BUCKET",
            "run_name": "STIV_RUN_NAME"}
FLAG_NAMES = {"name": "--tpu-name"}
_WHERE = ("project", "zone", "name")
_ALL = _WHERE + ("accelerator_type", "bucket", "run_name", "config")
REQUIRED = {"create": _WHERE + ("accelerator_type",), "install": _WHERE + ("bucket", "run_name"),
            "train": _ALL, "up": _ALL, "resume": _ALL,
            "logs": _WHERE, "stop": _WHERE, "status": _WHERE, "delete": _WHERE}


class LaunchError(RuntimeError):
    """A step failed; main() prints it and exits with status 1."""


class Runner:
    """Runs argv lists (no shell), or with dry_run prints them shlex-quoted, one per line."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def note(self, message: str) -> None:
        print(f"# {message}", file=sys.stdout if self.dry_run else sys.stderr, flush=True)

    def run(self, cmd: list[str]) -> None:
        if self.dry_run:
            print(shlex.join(cmd), flush=True)
            return
        print(f"+ {shlex.join(cmd)}", file=sys.stderr, flush=True)
        status = self._call(subprocess.call, cmd)
        if status:
            raise LaunchError(f"exit status {status} from: {shlex.join(cmd)}")

    def query(self, cmd: list[str]) -> subprocess.CompletedProcess:
        assert not self.dry_run, "a dry run queries nothing"
        return self._call(subprocess.run, cmd, capture_output=True, text=True)

    @staticmethod
    def _call(fn, cmd, **kwargs):
        try:
            return fn(cmd, **kwargs)
        except FileNotFoundError:
            hint = " (install the Google Cloud CLI)" if cmd[0] == "gcloud" else ""
            raise LaunchError(f"{cmd[0]} not found on PATH{hint}") from None


@dataclasses.dataclass
class Launch:
    args: argparse.Namespace
    runner: Runner
    target: commands.Target
    slice: slices.Slice | None
    workdir: str | None

    @property
    def runtime_version(self) -> str:
        return self.args.runtime_version or self.slice.runtime_version


# ---------------------------------------------------------------------------------------------
# Steps


def create(ctx: Launch) -> None:
    a = ctx.args
    ctx.runner.run(commands.create(ctx.target, ctx.slice, runtime_version=ctx.runtime_version,
                                   spot=a.spot, reserved=a.reserved,
                                   valid_until=a.valid_until_duration))


def install(ctx: Launch, *, upload: bool) -> None:
    uri = commands.code_uri(ctx.workdir)
    if upload:
        tarball = os.path.join(tempfile.gettempdir(), f"stiv_jax-{ctx.args.run_name}.tar.gz")
        ctx.runner.run(commands.pack_code(str(REPO), tarball))
        ctx.runner.run(commands.upload(tarball, uri))
    else:
        ctx.runner.note(f"reusing the run's code snapshot {uri}")
    ctx.runner.run(commands.ssh(ctx.target, commands.install_script(uri, ctx.args.python_version)))


def train(ctx: Launch) -> None:
    a, env = ctx.args, dict(ctx.args.env)
    if a.buckets:  # Grain reads shards from local files: mount gs:// data read-only first
        ctx.runner.run(commands.ssh(ctx.target, commands.gcsfuse_mount_script(
            a.buckets, a.gcsfuse_root, file_cache_mb=a.gcsfuse_file_cache_mb)))
        env[commands.GCSFUSE_ROOT_ENV] = a.gcsfuse_root
    else:
        ctx.runner.note("nothing to mount: no gs:// --config.data.path after -- and no --mount")
    args = commands.train_args(a.config, ctx.workdir, ctx.slice, distributed_key=a.distributed_key,
                               mesh_overrides=a.mesh_overrides, extra=a.extra)
    ctx.runner.run(commands.ssh(ctx.target, commands.train_script(args, env)))
    ctx.runner.note(f"follow with: launch.py logs --tpu-name={ctx.target.name} "
                    f"--zone={ctx.target.zone} --project={ctx.target.project}")


def slice_state(ctx: Launch) -> str | None:
    """The slice's lifecycle state, or None when it does not exist."""
    proc = ctx.runner.query(commands.describe(ctx.target, state_only=True))
    if proc.returncode == 0:
        return proc.stdout.strip() or "UNKNOWN"
    if "NOT_FOUND" in proc.stderr or "not found" in proc.stderr.lower():
        return None
    raise LaunchError(f"could not describe {ctx.target.kind} {ctx.target.name}: "
                      f"{proc.stderr.strip()}")


def wait_until_ready(ctx: Launch) -> None:
    target, a = ctx.target, ctx.args
    if ctx.runner.dry_run:
        ctx.runner.note(f"poll every {a.poll_seconds:g}s until the state is {target.ready_state}:")
        ctx.runner.run(commands.describe(target, state_only=True))
        return
    deadline = time.monotonic() + a.wait_timeout if a.wait_timeout else None
    last = ""
    while True:
        state = slice_state(ctx)
        if state != last:
            ctx.runner.note(f"{target.kind} {target.name}: {state or 'absent'}")
            last = state
        if state == target.ready_state:
            return
        if state not in target.pending_states:
            raise LaunchError(f"{target.kind} {target.name} is {state or 'absent'}; "
                              f"it will not become {target.ready_state}")
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"still {state} after {a.wait_timeout}s; the request stays "
                              "queued (check with `status`, cancel with `delete`)")
        time.sleep(a.poll_seconds)


# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_up(ctx: Launch) -> None:
    if not ctx.runner.dry_run and not (REPO / ctx.args.config).is_file():
        raise LaunchError(f"--config {ctx.args.config} not found under {REPO}; "
                          "it is uploaded from this checkout")
    create(ctx)
    wait_until_ready(ctx)
    install(ctx, upload=ctx.args.code != "reuse")
    train(ctx)


def cmd_resume(ctx: Launch) -> None:
    target, runner = ctx.target, ctx.runner
    if runner.dry_run:
        state = ctx.args.assume_state or target.preempted_state
        state = None if state == "ABSENT" else state
        runner.note(f"dry run: assuming the {target.kind} is {state or 'absent'} "
                    "(--assume-state)")
    else:
        state = slice_state(ctx)
        runner.note(f"{target.kind} {target.name}: {state or 'absent'}")
    if state in target.recreate_states:
        runner.note(f"preempted ({state}): deleting and recreating {target.name}")
        runner.run(commands.delete(target, quiet=True))
        state = None
    elif state not in {None, target.ready_state} | target.pending_states:
        raise LaunchError(f"cannot resume {target.kind} {target.name} from state {state}")
    if state is None:
        create(ctx)
    wait_until_ready(ctx)
    install(ctx, upload=ctx.args.code == "upload")
    train(ctx)
    runner.note(f"stiv-train restores the latest checkpoint in {ctx.workdir}")


def cmd_logs(ctx: Launch) -> None:
    a = ctx.args
    script = commands.logs_script(a.lines, follow=a.follow)
    ctx.runner.run(commands.ssh(ctx.target, script, worker=a.worker))


def cmd_delete(ctx: Launch) -> None:
    if ctx.target.queued:
        ctx.runner.note("--force also deletes the queued resource's TPU VMs")
    ctx.runner.run(commands.delete(ctx.target, quiet=ctx.args.yes))


SUBCOMMANDS = {
    "create": create,
    "install": lambda ctx: install(ctx, upload=ctx.args.code != "reuse"),
    "train": train,
    "up": cmd_up,
    "resume": cmd_resume,
    "logs": cmd_logs,
    "stop": lambda ctx: ctx.runner.run(
        commands.ssh(ctx.target, commands.stop_script(ctx.args.grace_seconds))),
    "status": lambda ctx: ctx.runner.run(commands.describe(ctx.target)),
    "delete": cmd_delete,
}


# ---------------------------------------------------------------------------------------------
# Command line


def _option_groups() -> dict[str, argparse.ArgumentParser]:
    def group() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    def env(key: str) -> str | None:
        return os.environ.get(ENV_VARS[key]) or None

    common = group()
    s = common.add_argument_group("slice")
    s.add_argument("--project", default=env("project"), help="GCP project [$STIV_PROJECT]")
    s.add_argument("--zone", default=env("zone"), help="e.g. us-west4-a [$STIV_ZONE]")
    s.add_argument("--tpu-name", "--name", dest="name", default=env("name"),
                   help="TPU VM / queued resource name [$STIV_TPU_NAME; default: --run-name]")
    s.add_argument("--accelerator-type", default=env("accelerator_type"),
                   help="v5litepod-256 (alias v5e-256), v5p-128, v6e-64, v4-32, ... "
                        "[$STIV_ACCELERATOR_TYPE]")
    s.add_argument("--runtime-version", help="TPU software version; default per generation: "
                   + ", ".join(f"{g.name} {g.runtime_version}"
                               for g in slices.GENERATIONS.values()))
    s.add_argument("--queued", action="store_true",
                   help="use a queued resource (waits in line for capacity; recommended for pods)")
    s.add_argument("--internal-ip", action="store_true", help="ssh over internal IPs")
    s.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    r = common.add_argument_group("run")
    r.add_argument("--bucket", default=env("bucket"), help="gs://BUCKET[/PREFIX] [$STIV_BUCKET]")
    r.add_argument("--run-name", default=env("run_name"),
                   help="workdir is BUCKET/RUN_NAME [$STIV_RUN_NAME]")
    r.add_argument("--config", help="experiment config, relative to the repo root, e.g. "
                                    "experiments/t2v_m_512.py")

    make = group()
    make.add_argument("--spot", action="store_true", help="spot capacity (preemptible, cheaper)")
    make.add_argument("--reserved", action="store_true", help="use the project's reservation")
    make.add_argument("--valid-until-duration", help="queued: give up waiting after, e.g., 6h")

    code = group()
    code.add_argument("--code", choices=("upload", "reuse"),
                      help="upload a snapshot of this checkout, or reuse the run's snapshot "
                           "(default: upload; resume: reuse)")
    code.add_argument("--python-version", default="3.12", help="worker venv Python (uv)")

    run = group()
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", type=_env_pair,
                     help="environment for stiv-train, e.g. LIBTPU_INIT_ARGS=... (repeatable)")
    run.add_argument("--distributed-key", default="distributed",
                     help="config key set True so stiv-train calls jax.distributed.initialize() "
                          "(default: distributed; '' to pass none)")
    run.add_argument("--no-mesh-overrides", dest="mesh_overrides", action="store_false",
                     help="do not pass --config.mesh.{data,fsdp,tensor}=1,<chips>,1")
    run.add_argument("--mount", action="append", default=[], metavar="gs://BUCKET",
                     help="also mount this bucket (data set in the config file; repeatable)")
    run.add_argument("--gcsfuse-root", default=commands.DEFAULT_GCSFUSE_ROOT,
                     help="gs://B/P is read at ROOT/B/P (stiv-train gets $STIV_GCSFUSE_ROOT)")
    run.add_argument("--gcsfuse-file-cache-mb", type=int, default=0, metavar="MB",
                     help="local file cache per mounted bucket, MiB (-1: no limit; 0: off)")

    wait = group()
    wait.add_argument("--poll-seconds", type=float, default=60.0)
    wait.add_argument("--wait-timeout", type=float, default=0.0,
                      help="seconds to wait for the slice (0: forever)")
    return {"common": common, "make": make, "code": code, "run": run, "wait": wait}


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    g = _option_groups()
    parser = argparse.ArgumentParser(
        prog="launch.py", description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` are passed to stiv-train (train, up, resume), e.g. "
               "`-- --config.batch_size=512`. Details: launch_tpu/README.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec = {
        "create": (["make"], "create the TPU VM slice, or with --queued a queued resource"),
        "install": (["code"], "upload the code snapshot; install it on every worker"),
        "train": (["run"], "start stiv-train on every worker (--worker=all), detached"),
        "up": (["make", "code", "run", "wait"], "create, wait until ready, install, train"),
        "resume": (["make", "code", "run", "wait"],
                   "after a preemption: recreate if needed, reinstall, restart training"),
        "logs": ([], "tail the training log of one worker (default 0) or all"),
        "stop": ([], "SIGTERM stiv-train on every worker (it checkpoints), then SIGKILL"),
        "status": ([], "describe the slice"),
        "delete": ([], "delete the slice (stops billing)"),
    }
    subs = {}
    for name, (groups, help_) in spec.items():
        parents = [g["common"]] + [g[k] for k in groups]
        subs[name] = sub.add_parser(name, parents=parents, help=help_, description=help_)
    subs["resume"].add_argument(
        "--assume-state", type=str.upper,
        help="dry run only: the state to plan for (default SUSPENDED / PREEMPTED; ABSENT)")
    subs["logs"].add_argument("--worker", default="0", help="worker index, or all")
    subs["logs"].add_argument("--lines", type=int, default=100)
    subs["logs"].add_argument("--no-follow", dest="follow", action="store_false")
    subs["stop"].add_argument("--grace-seconds", type=int, default=600,
                              help="time to checkpoint before SIGKILL")
    subs["delete"].add_argument("--yes", action="store_true", help="do not ask to confirm")
    return parser, subs


def parse_args(argv: list[str] | None = None) -> Launch:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser, subs = build_parser()
    a = parser.parse_args(argv)
    a.extra = extra
    sub = subs[a.command]
    if extra and a.command not in ("train", "up", "resume"):
        sub.error("arguments after -- go to stiv-train: only train, up and resume take them")
    if getattr(a, "assume_state", None) and not a.dry_run:
        sub.error("--assume-state only plans a --dry-run; a real resume asks gcloud")
    a.name = a.name or a.run_name
    missing = [key for key in REQUIRED[a.command] if not getattr(a, key)]
    if missing:
        sub.error("missing " + ", ".join(_describe_flag(key) for key in missing))
    workdir = slice_ = None
    try:
        commands.check_tpu_name(a.name)
        if a.accelerator_type and "accelerator_type" in REQUIRED[a.command]:
            slice_ = commands.parse_slice(a.accelerator_type)
        if a.run_name is not None and "bucket" in REQUIRED[a.command]:
            workdir = commands.workdir_uri(a.bucket, a.run_name)
        if a.command in ("train", "up", "resume"):  # the data buckets to mount on every worker
            a.gcsfuse_root = commands.gcsfuse_root(a.gcsfuse_root, a.gcsfuse_file_cache_mb, a.env)
            a.buckets = commands.data_buckets(a.extra, a.mount)
    except ValueError as e:
        sub.error(str(e))
    target = commands.Target(a.project, a.zone, a.name, queued=a.queued,
                             internal_ip=a.internal_ip)
    return Launch(a, Runner(a.dry_run), target, slice_, workdir)


def _describe_flag(key: str) -> str:
    flag = FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
    return f"{flag} (or ${ENV_VARS[key]})" if key in ENV_VARS else flag


def main(argv: list[str] | None = None) -> int:
    ctx = parse_args(argv)
    a = ctx.args
    if ctx.slice is not None:
        ctx.runner.note(f"{ctx.slice.summary()}; runtime {ctx.runtime_version}")
    if ctx.workdir is not None:
        ctx.runner.note(f"workdir {ctx.workdir}")
    if a.config and not os.path.isabs(a.config) and not (REPO / a.config).is_file():
        ctx.runner.note(f"warning: {a.config} is not in this checkout ({REPO})")
    try:
        SUBCOMMANDS[a.command](ctx)
    except LaunchError as e:
        print(f"launch.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
