"""Flag parsing shared by the console scripts.

Each CLI keeps its flags in a private ``absl.flags.FlagValues`` so several CLIs can be imported in
one process (tests) without duplicate-flag errors, and ``run(argv)`` accepts the arguments with or
without the program name in front. Every CLI gets ``--verbose`` (tracebacks of known errors and the
libraries' INFO logs: ``stiv_jax/console/errors.py``); a bad flag is one ``prog: error:`` line and
exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from stiv_jax.console.errors import fail, quiet_libraries, verbose_from_env


def parse(fv: flags.FlagValues, argv: Sequence[str] | None, prog: str, usage: str = "") -> flags.FlagValues:
    """Parses ``argv`` (default ``sys.argv``) into ``fv``; exits with usage on --help, with one
    error line (status 2) on a bad flag; quiets library logs unless ``--verbose``."""
    if "verbose" not in fv:
        flags.DEFINE_bool(
            "verbose", False, "Show tracebacks of known errors and the libraries' INFO logs.", flag_values=fv
        )
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        args = args[1:]
    if any(a in ("-h", "--help", "--helpfull") for a in args):
        print(f"{usage.strip() or prog}\n\nFlags:\n{fv.get_help()}")
        sys.exit(0)
    try:
        rest = fv([prog, *args])
    except flags.Error as e:
        fail(prog, f"{e} (--help lists the flags)")
    if len(rest) > 1:
        fail(prog, f"unexpected arguments {rest[1:]} (--help lists the flags)")
    quiet_libraries(fv.verbose or verbose_from_env())
    return fv
