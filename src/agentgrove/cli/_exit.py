"""Leaving the ``grove`` process without the interpreter's teardown.

Once a command is over, Python's own exit still frees every object and module one by one: with
the Claude runtime loaded (claude_agent_sdk, mcp's pydantic models) that is ~0.2 s of CPU after
the last output, a tenth of a one-turn ``grove run``. :func:`leave` does what that exit does
that anybody can observe, in the same order: it waits for the threads that are not daemons
(:func:`threading._shutdown`, the interpreter's own step, which also stops idle thread pools),
runs the ``atexit`` handlers (logging's flush, ``weakref.finalize`` clean-ups, coverage), and
flushes stdout and stderr; then it ends the process with ``os._exit``. Whatever cannot be done
that way (a flush that fails, an interpreter without these hooks) takes the ordinary exit.
Only the entry point calls it: the shell runs commands inside its own process.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def leave(code: str | int | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would (``None`` is 0, an int is the status, any
    other value is printed to stderr and the status is 1), minus the teardown."""
    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None:
        sys.exit(code)
    if code is None or isinstance(code, int):
        status = code or 0
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        shutdown()
        run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # e.g. a closed pipe: Python's exit reports it as it always does
        sys.exit(status)
    os._exit(status)
