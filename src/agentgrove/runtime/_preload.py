"""Import the Claude runtime (claude_agent_sdk, and through it mcp) on a background thread.

Importing it costs ~0.4-0.9 s of the interpreter's time (mcp builds hundreds of pydantic
models), more than a one-turn ``claude -p`` takes. The first attempt of a process starts its
CLI without the SDK (:mod:`._cli_start`) and only then starts this import (grove's
``_DeferredRuntime``), so that it runs while the CLI starts up on another CPU. Not earlier: the
import holds the GIL, and started before the CLI it slowed down what leads to that start (the
claim, the worktree, the database). Python's import lock makes the later
``import agentgrove.runtime.claude`` wait for this one instead of importing twice.

The cyclic garbage collector is paused while it imports: the import makes hundreds of
thousands of objects and no garbage, and each collection it triggers scans them all again
(~0.1 s of CPU in all, on the path to the first agent's start). Afterwards everything that
exists is frozen (``gc.freeze``): it lives as long as the process, and later collections need
not scan it.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading

_log = logging.getLogger(__name__)
_started = threading.Event()


def preload_claude_runtime() -> None:
    """Start importing :mod:`agentgrove.runtime.claude` in the background (once per process);
    returns at once. A failing import is logged here and raised again where it is used."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_import, name="grove-preload-sdk", daemon=True).start()


def _import() -> None:
    collecting = gc.isenabled()
    gc.disable()  # process-wide, for the import's ~0.5 s only; restored whatever happens
    try:
        importlib.import_module("agentgrove.runtime.claude")
    except Exception:  # the real import, on first use, reports it to the user
        _log.debug("preloading the Claude runtime failed", exc_info=True)
    finally:
        # What the imports made lives as long as the process: out of the collector's sight,
        # later collections no longer scan it again and again (gc.freeze).
        gc.freeze()
        if collecting:
            gc.enable()
