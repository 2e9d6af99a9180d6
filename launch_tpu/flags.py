"""The command line of ``launch_tpu/launch.py``: subcommands, their option groups, and where each
required value may come from (a flag or a ``STIV_*`` environment variable)."""

from __future__ import annotations

import argparse
import os
import re

from launch_tpu import commands, slices

ENV_VARS = {
    "project": "STIV_PROJECT",
    "zone": "STIV_ZONE",
    "name": "STIV_TPU_NAME",
    "accelerator_type": "STIV_ACCELERATOR_TYPE",
    "bucket": "STIV_BUCKET",
    "run_name": "STIV_RUN_NAME",
}
FLAG_NAMES = {"name": "--tpu-name"}
_WHERE = ("project", "zone", "name")
_ALL = _WHERE + ("accelerator_type", "bucket", "run_name", "config")
REQUIRED = {
    "create": _WHERE + ("accelerator_type",),
    "install": _WHERE + ("bucket", "run_name"),
    "train": _ALL,
    "up": _ALL,
    "resume": _ALL,
    "logs": _WHERE,
    "stop": _WHERE,
    "status": _WHERE,
    "delete": _WHERE,
}


def _option_groups() -> dict[str, argparse.ArgumentParser]:
    def group() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    def env(key: str) -> str | None:
        return os.environ.get(ENV_VARS[key]) or None

    common = group()
    s = common.add_argument_group("slice")
    s.add_argument("--project", default=env("project"), help="GCP project [$STIV_PROJECT]")
    s.add_argument("--zone", default=env("zone"), help="e.g. us-west4-a [$STIV_ZONE]")
    s.add_argument(
        "--tpu-name",
        "--name",
        dest="name",
        default=env("name"),
        help="TPU VM / queued resource name [$STIV_TPU_NAME; default: --run-name]",
    )
    s.add_argument(
        "--accelerator-type",
        default=env("accelerator_type"),
        help="v5litepod-256 (alias v5e-256), v5p-128, v6e-64, v4-32, ... [$STIV_ACCELERATOR_TYPE]",
    )
    s.add_argument(
        "--runtime-version",
        help="TPU software version; default per generation: "
        + ", ".join(f"{g.name} {g.runtime_version}" for g in slices.GENERATIONS.values()),
    )
    s.add_argument(
        "--queued", action="store_true", help="use a queued resource (waits in line for capacity; recommended for pods)"
    )
    s.add_argument("--internal-ip", action="store_true", help="ssh over internal IPs")
    s.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    r = common.add_argument_group("run")
    r.add_argument("--bucket", default=env("bucket"), help="gs://BUCKET[/PREFIX] [$STIV_BUCKET]")
    r.add_argument("--run-name", default=env("run_name"), help="workdir is BUCKET/RUN_NAME [$STIV_RUN_NAME]")
    r.add_argument("--config", help="experiment config, relative to the repo root, e.g. experiments/t2v_m_512.py")

    make = group()
    make.add_argument("--spot", action="store_true", help="spot capacity (preemptible, cheaper)")
    make.add_argument("--reserved", action="store_true", help="use the project's reservation")
    make.add_argument("--valid-until-duration", help="queued: give up waiting after, e.g., 6h")

    code = group()
    code.add_argument(
        "--code",
        choices=("upload", "reuse"),
        help="upload a snapshot of this checkout, or reuse the run's snapshot (default: upload; resume: reuse)",
    )
    code.add_argument("--python-version", default="3.12", help="worker venv Python (uv)")

    run = group()
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_env_pair,
        help="environment for stiv-train, e.g. LIBTPU_INIT_ARGS=... (repeatable)",
    )
    run.add_argument(
        "--distributed-key",
        default="distributed",
        help="config key set True so stiv-train calls jax.distributed.initialize() "
        "(default: distributed; '' to pass none)",
    )
    run.add_argument(
        "--no-mesh-overrides",
        dest="mesh_overrides",
        action="store_false",
        help="do not pass --config.mesh.{data,fsdp,tensor}=1,<chips>,1",
    )
    run.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="gs://BUCKET",
        help="also mount this bucket (data set in the config file; repeatable)",
    )
    run.add_argument(
        "--gcsfuse-root",
        default=commands.DEFAULT_GCSFUSE_ROOT,
        help="gs://B/P is read at ROOT/B/P (stiv-train gets $STIV_GCSFUSE_ROOT)",
    )
    run.add_argument(
        "--gcsfuse-file-cache-mb",
        type=int,
        default=0,
        metavar="MB",
        help="local file cache per mounted bucket, MiB (-1: no limit; 0: off)",
    )

    wait = group()
    wait.add_argument("--poll-seconds", type=float, default=60.0)
    wait.add_argument("--wait-timeout", type=float, default=0.0, help="seconds to wait for the slice (0: forever)")
    return {"common": common, "make": make, "code": code, "run": run, "wait": wait}


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser(description: str) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    g = _option_groups()
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description=description,
        epilog="Arguments after `--` are passed to stiv-train (train, up, resume), e.g. "
        "`-- --config.batch_size=512`. Details: launch_tpu/README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec = {
        "create": (["make"], "create the TPU VM slice, or with --queued a queued resource"),
        "install": (["code"], "upload the code snapshot; install it on every worker"),
        "train": (["run"], "start stiv-train on every worker (--worker=all), detached"),
        "up": (["make", "code", "run", "wait"], "create, wait until ready, install, train"),
        "resume": (
            ["make", "code", "run", "wait"],
            "after a preemption: recreate if needed, reinstall, restart training",
        ),
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
        "--assume-state",
        type=str.upper,
        help="dry run only: the state to plan for (default SUSPENDED / PREEMPTED; ABSENT)",
    )
    subs["logs"].add_argument("--worker", default="0", help="worker index, or all")
    subs["logs"].add_argument("--lines", type=int, default=100)
    subs["logs"].add_argument("--no-follow", dest="follow", action="store_false")
    subs["stop"].add_argument("--grace-seconds", type=int, default=600, help="time to checkpoint before SIGKILL")
    subs["delete"].add_argument("--yes", action="store_true", help="do not ask to confirm")
    return parser, subs


def describe_flag(key: str) -> str:
    flag = FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
    return f"{flag} (or ${ENV_VARS[key]})" if key in ENV_VARS else flag
