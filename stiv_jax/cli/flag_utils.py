"""Flag parsing shared by the data CLIs.

Each CLI keeps its flags in a private ``absl.flags.FlagValues`` so several CLIs can be imported in
one process (tests) without duplicate-flag errors, and ``run(argv)`` accepts the arguments with or
without the program name in front.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags


def parse(fv: flags.FlagValues, argv: Sequence[str] | None, prog: str, usage: str = "") -> flags.FlagValues:
    """Parses ``argv`` (default ``sys.argv``) into ``fv``; exits with usage on bad flags or --help."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        args = args[1:]
    if any(a in ("-h", "--help", "--helpfull") for a in args):
        print(f"{usage.strip() or prog}\n\nFlags:\n{fv.get_help()}")
        sys.exit(0)
    try:
        rest = fv([prog, *args])
    except flags.Error as e:
        sys.exit(f"{prog}: {e}\n\nFlags:\n{fv.get_help()}")
    if len(rest) > 1:
        sys.exit(f"{prog}: unexpected arguments {rest[1:]}")
    return fv
