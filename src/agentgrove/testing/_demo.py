"""Ready-made scripts: the ``grove demo`` pipeline, a one-file writer, and the playground that
``grove dev model-server`` serves.

Roles are matched from ``agentgrove-role: <name>`` lines in the system prompt;
each rule serves any number of conversations.
"""

from __future__ import annotations

import re

from agentgrove.testing._request import ModelRequest
from agentgrove.testing._script import Script
from agentgrove.testing._turns import Turn, bash, say, write_file

__all__ = ["DEMO_GREETING", "demo_script", "file_writer_script", "playground_script"]

DEMO_GREETING = "Hello, Grove!"
"""What the tester expects ``python3 greet.py Grove`` to print."""

SPEC_MD = """\
# greet.py

A tiny command-line greeter.

## Behaviour

- `python3 greet.py <name>` prints `Hello, <name>!` followed by a newline.
- With no argument it prints `Hello, world!`.
- Only the first argument is used; the exit status is 0.

## Acceptance

`python3 greet.py Grove` prints exactly `Hello, Grove!`.
"""

GREET_PY = '''\
"""Print a greeting for the name given on the command line (default: world)."""

import sys


def greeting(name: str) -> str:
    """Return the greeting line for ``name``."""
    return f"Hello, {name}!"


def main(argv: list[str]) -> int:
    """Print the greeting for ``argv[1]`` (or ``world``); return the exit status."""
    name = argv[1] if len(argv) > 1 else "world"
    print(greeting(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
'''


def _tester_verdict(request: ModelRequest) -> Turn:
    """Report the Bash output the CLI sent back: PASS only if it has the greeting."""
    output = "\n".join(request.tool_results).strip()
    verdict = "PASS" if DEMO_GREETING in output else "FAIL"
    return say(f"Ran greet.py: {output or '<no output>'} — {verdict}")


def demo_script() -> Script:
    """Script for ``grove demo``: roles ``spec-writer``, ``implementer``, ``tester``.

    spec-writer writes SPEC.md, implementer writes greet.py, tester runs
    ``python3 greet.py Grove`` and answers ``Ran greet.py: <output> — PASS``
    (or ``FAIL`` when the output lacks ``Hello, Grove!``).
    """
    script = Script()
    script.on(
        role="spec-writer",
        turns=[
            write_file("SPEC.md", SPEC_MD),
            say("Wrote SPEC.md: greet.py prints `Hello, <name>!` (default name `world`)."),
        ],
    )
    script.on(
        role="implementer",
        turns=[
            write_file("greet.py", GREET_PY),
            say("Implemented greet.py per SPEC.md: `python3 greet.py NAME` prints `Hello, NAME!`."),
        ],
    )
    script.on(
        role="tester",
        turns=[bash("python3 greet.py Grove", "Run greet.py"), _tester_verdict],
    )
    return script


def file_writer_script(path: str, content: str) -> Script:
    """Script for role ``file-writer``: Write ``path`` with ``content``, then ``Created <path>``."""
    return Script().on(
        role="file-writer", turns=[write_file(path, content), say(f"Created {path}")]
    )


_CREATE = re.compile(
    r"\bcreate\s+(?P<path>[\w][\w./-]*)(?:\s+(?:containing|with)\s+(?P<content>.+))?",
    re.IGNORECASE | re.DOTALL,
)


def playground_script() -> Script:
    """Script for ``grove dev model-server``, for trying grove without an API key.

    The demo roles answer as in :func:`demo_script`. Any other agent whose task says
    ``Create PATH`` (optionally ``containing TEXT``) writes that file and answers
    ``Created PATH``; any other task gets one line saying the scripted model has nothing to
    do for it. Every rule and handler serves any number of conversations.
    """
    script = demo_script()
    script.handler(_playground_turn)
    return script


def _playground_turn(request: ModelRequest) -> Turn | None:
    task = request.prompt.strip()
    found = _CREATE.search(task)
    if found is None:
        if request.turn_index == 0:
            first_line = task.splitlines()[0] if task else "(empty task)"
            return say(f"The scripted model has nothing to do for: {first_line[:200]}")
        return None
    path = found["path"].rstrip(".")
    if request.turn_index == 0:
        content = (found["content"] or "").strip().strip("\"'").rstrip(".")
        return write_file(path, content + "\n" if content else "")
    if request.turn_index == 1:
        return say(f"Created {path}")
    return None
