"""The run directory: its layout and all of its I/O, the same for a local folder and ``gs://``.

    WORKDIR/config.json            the training config (written by process 0 before training)
    WORKDIR/metrics.jsonl          one JSON row per log step
    WORKDIR/tb/                    TensorBoard event files
    WORKDIR/checkpoints/<step>/    orbax: the train state (train/checkpoint.py)
    WORKDIR/damaged_checkpoints/   checkpoints that could not be restored, moved aside (kept)
    WORKDIR/lock.json              the training process that holds the workdir (storage/lock.py)
    WORKDIR/samples/               stiv-sample's outputs when no --out is given
    WORKDIR/export/                stiv-export-torch's output when no --out is given

The trainer, sampler, export, progressive init and the probe all reach a run through
:class:`Workdir`. Object storage has no append, so on a ``gs://`` workdir the logs are written
to a local buffer folder (a temporary directory, removed at the end) and uploaded whole —
``metrics.jsonl`` and every event file, overwriting — by :meth:`RunLog.sync`: at a log step when
``sync_every_secs`` have passed since the last upload, after every checkpoint, and when the run
ends or stops. A killed process loses at most the rows since the last upload; checkpoints, read
by resume, are written to the bucket directly by orbax.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from stiv_jax.storage import paths

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
DAMAGED = "damaged_checkpoints"
LOCK = "lock.json"
SAMPLES = "samples"
EXPORT = "export"


@dataclasses.dataclass(frozen=True)
class Workdir:
    """A run directory; ``path`` is a local folder or a ``gs://`` URL."""

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(paths.as_path(self.path)))

    @property
    def remote(self) -> bool:
        return paths.is_remote(self.path)

    def file(self, *parts: str) -> str:
        return paths.join(self.path, *parts)

    @property
    def checkpoints(self) -> epath.Path:
        """The orbax root, as the ``epath.Path`` orbax takes (local or ``gs://``)."""
        return paths.as_path(self.file(CHECKPOINTS))

    def exists(self) -> bool:
        return paths.exists(self.path)

    def has_config(self) -> bool:
        return paths.exists(self.file(CONFIG))

    def save_config(self, config: ml_collections.ConfigDict) -> str:
        return paths.write_text(self.file(CONFIG), config.to_json(indent=2))

    def _config_json(self) -> dict:
        path = self.file(CONFIG)
        if not paths.exists(path):
            raise FileNotFoundError(f"{path}: no training config (is {self.path!r} a stiv-train workdir?)")
        return json.loads(paths.read_text(path))

    def load_config(self) -> ml_collections.ConfigDict:
        """The training config the run was started with."""
        return ml_collections.ConfigDict(self._config_json())

    def model_config_dict(self) -> dict:
        """The ``model`` entry of ``config.json`` as a plain dict (no JAX needed)."""
        full = self._config_json()
        if "model" not in full:
            raise ValueError(f"{self.file(CONFIG)}: no 'model' key (found {sorted(full)})")
        return full["model"]

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (empty when there is none yet)."""
        path = self.file(METRICS)
        if not paths.exists(path):
            return []
        return [json.loads(line) for line in paths.read_text(path).splitlines() if _step(line) is not None]

    def damaged_checkpoint(self, step: int) -> str:
        """Where an unreadable checkpoint is moved (a new name if that step was moved before)."""
        path, n = self.file(DAMAGED, str(step)), 1
        while paths.exists(path):
            path, n = self.file(DAMAGED, f"{step}.{n}"), n + 1
        return path

    def sample_path(self, name: str) -> str:
        return self.file(SAMPLES, name)

    def export_path(self, name: str = "stiv.safetensors") -> str:
        return self.file(EXPORT, name)


def _step(row: str) -> int | None:
    """The step of a ``metrics.jsonl`` line (None for a torn or foreign line)."""
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def as_workdir(workdir: str | os.PathLike | Workdir) -> Workdir:
    return workdir if isinstance(workdir, Workdir) else Workdir(os.fspath(workdir))


class RunLog:
    """``metrics.jsonl`` rows and TensorBoard scalars of one training process (process 0).

    Local workdir: written in place, appended. ``gs://`` workdir: written to a local buffer that
    :meth:`sync` uploads (see the module docstring); an earlier ``metrics.jsonl`` in the bucket
    (a resumed run) is downloaded first, so the uploaded file keeps every row. ``keep_until``
    (the step a run resumes from) drops the rows logged after that checkpoint by a run that was
    killed, which are logged again.
    """

    def __init__(self, workdir: Workdir, *, sync_every_secs: float = 60.0, keep_until: int | None = None):
        from tensorboardX import SummaryWriter

        self.workdir, self.sync_every_secs = workdir, sync_every_secs
        if workdir.remote:
            self._buffer = tempfile.mkdtemp(prefix="stiv_run_log_")
            local_root = self._buffer
        else:
            self._buffer = None
            local_root = workdir.path
            os.makedirs(local_root, exist_ok=True)
        self._jsonl_path = os.path.join(local_root, METRICS)
        rows = (
            paths.read_text(workdir.file(METRICS)).splitlines(keepends=True)
            if paths.exists(workdir.file(METRICS))
            else []
        )
        if keep_until is not None:  # a resumed run: rows after its checkpoint are logged again
            rows = [r for r in rows if _step(r) is not None and _step(r) <= keep_until]
        if workdir.remote or keep_until is not None:
            with open(self._jsonl_path, "w") as f:
                f.writelines(rows)
        self._tb_dir = os.path.join(local_root, TENSORBOARD)
        # A unique suffix: two sessions started within a second would share tensorboardX's name.
        self.tb = SummaryWriter(self._tb_dir, filename_suffix=f".{uuid.uuid4().hex[:8]}")
        self.jsonl = open(self._jsonl_path, "a")
        self._last_sync = time.monotonic()

    def write(self, step: int, metrics: dict[str, float], section: str = "train") -> None:
        """One ``metrics.jsonl`` row; TensorBoard scalars ``{section}/{key}``."""
        for k, v in metrics.items():
            self.tb.add_scalar(f"{section}/{k}", v, step)
        row = metrics if section == "train" else {f"{section}/{k}": v for k, v in metrics.items()}
        self.jsonl.write(json.dumps({"step": step, **row}) + "\n")
        self.jsonl.flush()
        if time.monotonic() - self._last_sync >= self.sync_every_secs:
            self.sync()

    def videos(self, tag: str, videos: np.ndarray, step: int) -> None:
        """``uint8 [N, T, H, W, 3]`` videos as one TensorBoard image: a row of frames per video."""
        n, t, h, w, c = videos.shape
        self.tb.add_image(tag, videos.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c), step, dataformats="HWC")

    def sync(self) -> None:
        """Uploads the buffer (remote workdirs; local ones are already in place)."""
        self.tb.flush()
        self.jsonl.flush()
        self._upload()

    def _upload(self) -> None:
        self._last_sync = time.monotonic()
        if self._buffer is None:
            return
        paths.upload(self._jsonl_path, self.workdir.file(METRICS))
        for name in sorted(os.listdir(self._tb_dir)):
            paths.upload(os.path.join(self._tb_dir, name), self.workdir.file(TENSORBOARD, name))

    def close(self) -> None:
        try:
            self.tb.close()
            self.jsonl.close()
            self._upload()
        finally:
            if self._buffer is not None:
                shutil.rmtree(self._buffer, ignore_errors=True)
