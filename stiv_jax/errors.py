"""The project's one error base class: what goes wrong because of the user's input, not a bug.

A :class:`UserError` (a bad flag or config value, data that cannot be read, a checkpoint or input
file that is not what it should be) carries a message meant for the user; the console scripts
print it as one line (``stiv_jax/console/errors.py``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A known error with a message for the user (printed as ``stiv-xxx: error: <message>``)."""


class ConfigError(UserError, ValueError):
    """A config value or flag that cannot work; the message names the key."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s key without its quotes)."""
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return text or type(e).__name__
