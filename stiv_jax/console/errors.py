"""One error convention for every console script.

Known errors end with one line ``stiv-xxx: error: <message>`` on stderr and exit status 2:
a :class:`~stiv_jax.errors.UserError`; a ``ValueError``, ``KeyError`` or ``FileNotFoundError``
raised by stiv_jax's own code (its validation); an ``OSError`` about the user's files (missing,
permission, read-only file system, full disk). ``--verbose`` (or ``STIV_VERBOSE=1``) shows their
traceback, and the INFO logs of the libraries (orbax, absl, JAX), which are quiet by default.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from stiv_jax.errors import UserError, one_line

EXIT_KNOWN = 2
VERBOSE_ENV = "STIV_VERBOSE"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_USER_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def _raised_by_stiv_jax(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE + os.sep)


def is_known(e: BaseException) -> bool:
    """Whether ``e`` is the user's to fix (printed as one line) rather than a bug."""
    if isinstance(e, UserError):
        return True
    if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
        return True
    return isinstance(e, (ValueError, KeyError, FileNotFoundError)) and _raised_by_stiv_jax(e)


def fail(prog: str, message: str) -> None:
    """One ``prog: error: message`` line on stderr, exit status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(EXIT_KNOWN)


def quiet_libraries(verbose: bool = False) -> None:
    """Library INFO logs (orbax's dozens of lines per checkpoint) only with ``--verbose``."""
    level = logging.INFO if verbose else logging.WARNING
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    except ImportError:  # pragma: no cover - absl is a core dependency
        pass
    for name in ("absl", "jax", "orbax", "grain", "etils"):
        logging.getLogger(name).setLevel(level)


def absl_flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
    """``app.run(..., flags_parser=...)`` for CLIs on absl's global flags: a bad flag or
    ``--config.KEY`` is one error line and exit status 2 (absl prints usage and exits 1)."""
    from absl import flags

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
            if verbose_from_env():
                raise
            message = one_line(e)
            if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an unknown --config.KEY
                message = f"--config.{message.strip(chr(34) + chr(39))}: no such key in the config"
            fail(prog, f"{message} (--help lists the flags)")

    return parse


def config_value(holder) -> Any:
    """The config of a ``config_flags.DEFINE_config_file`` holder, loaded now: a file that does
    not exist or fails to import is a :class:`~stiv_jax.errors.ConfigError`."""
    from stiv_jax.errors import ConfigError

    try:
        config = holder.value
        config.get("seed")  # config_flags loads lazily and reports a failed load on first access
        return config
    except OSError as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ConfigError(f"--config: cannot load the config file ({detail[-1] if detail else e})") from e


@contextlib.contextmanager
def reported(prog: str, verbose: bool = False) -> Iterator[None]:
    """Turns a known error raised inside the block into ``prog: error: …`` and exit status 2."""
    try:
        yield
    except Exception as e:
        if verbose or verbose_from_env() or not is_known(e):
            raise
        fail(prog, one_line(e))
