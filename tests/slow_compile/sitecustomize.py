"""Imported at start-up (as ``sitecustomize``) by a test's stiv-train process that should compile
later than its peers, as a loaded or slower host does: ``STIV_TEST_SLOW_COMPILE=NAME:SECONDS``
sleeps after the first compilation of each XLA module whose name contains ``NAME``."""

import os
import sys

if os.environ.get("STIV_TEST_SLOW_COMPILE"):
    import time

    from jax._src import compiler

    _name, _seconds = os.environ["STIV_TEST_SLOW_COMPILE"].rsplit(":", 1)
    _original = compiler.compile_or_get_cached
    _slowed: set[str] = set()

    def _slow_compile(backend, computation, *args, **kwargs):
        executable = _original(backend, computation, *args, **kwargs)
        module = str(computation.operation.attributes["sym_name"]).strip('"')
        if _name in module and module not in _slowed:
            _slowed.add(module)
            print(f"slow_compile: {module} takes {_seconds} s longer", file=sys.stderr, flush=True)
            time.sleep(float(_seconds))
        return executable

    compiler.compile_or_get_cached = _slow_compile
