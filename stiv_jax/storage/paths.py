"""Where bytes live: local paths and ``gs://`` URLs through one path layer, ``etils.epath``.

- ``gs://`` goes through fsspec/gcsfs, never ``tf.io.gfile``: ``EPATH_USE_TF=false`` is set by
  default (TensorFlow, installed by the ``tf`` extra, would otherwise take over ``gs://`` in epath
  and orbax, and it ignores ``STORAGE_EMULATOR_HOST``), so the same code path runs against real
  GCS on a pod and against a local emulator in the tests. gcsfs's gRPC bucket-type probe (zonal /
  hierarchical buckets) is switched off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``). Both are
  ``setdefault``: an environment that sets them wins. Orbax writes arrays through tensorstore,
  which reads ``TENSORSTORE_GCS_HTTP_URL`` for an emulator.
- ArrayRecord shards cannot be read from a bucket (Grain opens local files), so a ``gs://`` data
  path is read through a read-only Cloud Storage FUSE mount, by one rule::

      gs://BUCKET/PATH  is read at  $STIV_GCSFUSE_ROOT/BUCKET/PATH     (default root /tmp/gcsfuse)

  ``launch_tpu`` mounts each data bucket there on every worker before training starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from etils import epath

from stiv_jax.errors import UserError

PathLike = str | os.PathLike
REMOTE_PREFIXES = ("gs://",)
GCSFUSE_ROOT_ENV = "STIV_GCSFUSE_ROOT"
DEFAULT_GCSFUSE_ROOT = "/tmp/gcsfuse"


class MountError(UserError, FileNotFoundError):
    """A ``gs://`` path whose files must be read through a FUSE mount that is not there."""


def is_remote(path: PathLike) -> bool:
    return os.fspath(path).startswith(REMOTE_PREFIXES)


def as_path(path: PathLike) -> epath.Path:
    """``epath.Path`` of ``path``: ``gs://`` URLs as they are, local paths made absolute."""
    path = os.fspath(path)
    if not path:
        raise ValueError("empty path")
    return epath.Path(path if is_remote(path) else os.path.abspath(path))


def join(path: PathLike, *parts: str) -> str:
    """``path/part/...`` as a string (``gs://`` kept)."""
    return os.fspath(epath.Path(os.fspath(path)).joinpath(*parts))


def exists(path: PathLike) -> bool:
    return as_path(path).exists()


def read_bytes(path: PathLike) -> bytes:
    return as_path(path).read_bytes()


def read_text(path: PathLike) -> str:
    return as_path(path).read_text()


def write_bytes(path: PathLike, data: bytes) -> str:
    """Writes ``data`` at ``path`` (parents created). Local writes go through a temporary file and
    a rename, so readers never see half a file; a GCS object appears whole when its upload ends."""
    p = as_path(path)
    if is_remote(path):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return os.fspath(p)
    os.makedirs(os.path.dirname(os.fspath(p)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.fspath(p)), prefix=f".{p.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, default_file_mode())  # mkstemp makes 0600
    os.replace(tmp, os.fspath(p))
    return os.fspath(p)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it: set and restore
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: toggling it later would race other threads' files


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_UMASK


def write_text(path: PathLike, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def upload(local: str, path: PathLike) -> str:
    """Copies the local file ``local`` to ``path`` (overwriting)."""
    with open(local, "rb") as f:
        return write_bytes(path, f.read())


def move(src: PathLike, dst: PathLike) -> str:
    """Moves a file or folder (a folder of objects, for ``gs://``); ``dst`` must not exist."""
    if is_remote(src) != is_remote(dst):
        raise ValueError(f"cannot move {src} to {dst}: one is local, the other remote")
    d = as_path(dst)
    if d.exists():
        raise FileExistsError(f"{d} exists already")
    if is_remote(src):
        import fsspec

        fsspec.filesystem("gs").mv(os.fspath(src), os.fspath(dst), recursive=True)
    else:
        os.makedirs(os.path.dirname(os.fspath(d)), exist_ok=True)
        os.replace(os.fspath(as_path(src)), os.fspath(d))
    return os.fspath(d)


@contextlib.contextmanager
def staged_file(path: PathLike) -> Iterator[str]:
    """A local file name to write ``path`` through: ``path`` itself when local (parents created);
    for ``gs://``, a temporary file uploaded when the block ends without an error."""
    if not is_remote(path):
        local = os.fspath(as_path(path))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        yield local
        return
    tmp = tempfile.mkdtemp(prefix="stiv_upload_")
    try:
        local = os.path.join(tmp, os.path.basename(os.fspath(path)))
        yield local
        upload(local, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gcsfuse_root() -> str:
    return os.environ.get(GCSFUSE_ROOT_ENV) or DEFAULT_GCSFUSE_ROOT


def fuse_path(url: str) -> str:
    """Where a read-only Cloud Storage FUSE mount shows ``gs://BUCKET/PATH``."""
    if not url.startswith("gs://"):
        raise ValueError(f"{url!r} is not a gs:// URL")
    return os.path.join(gcsfuse_root(), url[len("gs://") :])


def local_file(path: PathLike, what: str) -> str:
    """A path a local-file reader (Grain's ArrayRecord source) can open: ``path`` itself, or the
    FUSE mount of a ``gs://`` URL. Raises :class:`MountError` (one line, saying how to mount)
    when the mounted file is not there."""
    path = os.fspath(path)
    if not is_remote(path):
        return os.path.abspath(path)
    local = fuse_path(path)
    if not os.path.exists(local):
        bucket = path[len("gs://") :].split("/", 1)[0]
        raise MountError(
            f"{what}={path} is in a bucket, and Grain reads shards only from local files: expected "
            f"its Cloud Storage FUSE mount at {local}, which is missing; mount the bucket first "
            f"(`mkdir -p {gcsfuse_root()}/{bucket} && gcsfuse -o ro --implicit-dirs {bucket} "
            f"{gcsfuse_root()}/{bucket}`; launch_tpu does this on every worker; "
            f"{GCSFUSE_ROOT_ENV} moves the root)"
        )
    return local
