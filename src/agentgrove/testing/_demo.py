"""Ready-made scripts: the ``grove demo`` pipeline, a one-file writer, and the playground that
``grove dev model-server`` serves without ``--script``.

Roles are matched from ``agentgrove-role: <name>`` lines in the system prompt;
each rule serves any number of conversations.
"""

from __future__ import annotations

import re

from agentgrove.testing._request import ModelRequest
from agentgrove.testing._script import Script
from agentgrove.testing._turns import Fault, Turn, bash, read_file, say, write_file

__all__ = [
    "DEMO_GREETING",
    "NO_BEHAVIOUR",
    "demo_script",
    "file_writer_script",
    "playground_script",
]

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


NO_BEHAVIOUR = "the scripted model has no behaviour for this task"
"""How the playground's refusal starts (the agent fails with it)."""


def playground_script() -> Script:
    """Script for ``grove dev model-server`` without ``--script``: trying grove with no API key.

    An agent of any role whose task says ``Create PATH`` (optionally ``containing TEXT``)
    writes that file, reading it first when it exists (the CLI refuses to overwrite a file
    the model has not read), and answers ``Created PATH`` (``Replaced PATH`` for an existing
    file). A refused Read or Write makes the agent fail with the CLI's words. Any other task
    makes the agent fail with a message naming ``--script``: the scripted model never
    pretends to have done work it was not scripted for. The demo roles are not answered here
    (that is :func:`demo_script`, for ``grove demo`` only).
    """
    return Script(handler=_playground_turn)


def _refuse(message: str) -> Fault:
    # HTTP 400 is permanent: the CLI gives up and grove fails the agent with this message.
    return Fault.status(400, message=message)


def _playground_turn(request: ModelRequest) -> Turn | Fault:
    task = request.prompt.strip()
    found = _CREATE.search(task)
    if found is None:
        first_line = task.splitlines()[0][:200] if task else "(empty task)"
        return _refuse(
            f"{NO_BEHAVIOUR} ({first_line!r}); serve a script for it with "
            "`grove dev model-server --script FILE.yaml` (see docs/scripting.md)"
        )
    path = found["path"].rstrip(".")
    content = (found["content"] or "").strip().strip("\"'").rstrip(".")
    calls = request.tool_calls
    if not calls:
        cwd = request.cwd
        if cwd is None or (cwd / path).exists():
            return read_file(path)
        return write_file(path, content + "\n" if content else "")
    last = calls[-1]
    if last.name == "Read":  # read or not (no such file), the Write comes next
        return write_file(path, content + "\n" if content else "")
    if last.is_error:
        return _refuse(f"the Write of {path} was refused: {last.result or '(no reason given)'}")
    existed = calls[0].name == "Read" and not calls[0].is_error
    return say(f"{'Replaced' if existed else 'Created'} {path}")
