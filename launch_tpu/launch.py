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
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `launch_tpu` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch_tpu import commands, slices
from launch_tpu.flags import REQUIRED, build_parser, describe_flag

REPO = Path(__file__).resolve().parents[1]


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
    ctx.runner.run(
        commands.create(
            ctx.target,
            ctx.slice,
            runtime_version=ctx.runtime_version,
            spot=a.spot,
            reserved=a.reserved,
            valid_until=a.valid_until_duration,
        )
    )


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
        ctx.runner.run(
            commands.ssh(
                ctx.target,
                commands.gcsfuse_mount_script(a.buckets, a.gcsfuse_root, file_cache_mb=a.gcsfuse_file_cache_mb),
            )
        )
        env[commands.GCSFUSE_ROOT_ENV] = a.gcsfuse_root
    else:
        ctx.runner.note("nothing to mount: no gs:// --config.data.path after -- and no --mount")
    args = commands.train_args(
        a.config,
        ctx.workdir,
        ctx.slice,
        distributed_key=a.distributed_key,
        mesh_overrides=a.mesh_overrides,
        extra=a.extra,
    )
    ctx.runner.run(commands.ssh(ctx.target, commands.train_script(args, env)))
    ctx.runner.note(
        f"follow with: launch.py logs --tpu-name={ctx.target.name} "
        f"--zone={ctx.target.zone} --project={ctx.target.project}"
    )


def slice_state(ctx: Launch) -> str | None:
    """The slice's lifecycle state, or None when it does not exist."""
    proc = ctx.runner.query(commands.describe(ctx.target, state_only=True))
    if proc.returncode == 0:
        return proc.stdout.strip() or "UNKNOWN"
    if "NOT_FOUND" in proc.stderr or "not found" in proc.stderr.lower():
        return None
    raise LaunchError(f"could not describe {ctx.target.kind} {ctx.target.name}: {proc.stderr.strip()}")


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
            raise LaunchError(
                f"{target.kind} {target.name} is {state or 'absent'}; it will not become {target.ready_state}"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(
                f"still {state} after {a.wait_timeout}s; the request stays "
                "queued (check with `status`, cancel with `delete`)"
            )
        time.sleep(a.poll_seconds)


# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_up(ctx: Launch) -> None:
    if not ctx.runner.dry_run and not (REPO / ctx.args.config).is_file():
        raise LaunchError(f"--config {ctx.args.config} not found under {REPO}; it is uploaded from this checkout")
    create(ctx)
    wait_until_ready(ctx)
    install(ctx, upload=ctx.args.code != "reuse")
    train(ctx)


def cmd_resume(ctx: Launch) -> None:
    target, runner = ctx.target, ctx.runner
    if runner.dry_run:
        state = ctx.args.assume_state or target.preempted_state
        state = None if state == "ABSENT" else state
        runner.note(f"dry run: assuming the {target.kind} is {state or 'absent'} (--assume-state)")
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
    "stop": lambda ctx: ctx.runner.run(commands.ssh(ctx.target, commands.stop_script(ctx.args.grace_seconds))),
    "status": lambda ctx: ctx.runner.run(commands.describe(ctx.target)),
    "delete": cmd_delete,
}


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> Launch:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser, subs = build_parser(__doc__.split("\n\n")[0])
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
        sub.error("missing " + ", ".join(describe_flag(key) for key in missing))
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
    target = commands.Target(a.project, a.zone, a.name, queued=a.queued, internal_ip=a.internal_ip)
    return Launch(a, Runner(a.dry_run), target, slice_, workdir)


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
