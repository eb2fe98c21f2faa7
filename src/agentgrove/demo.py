"""`grove demo`: spec-writer -> implementer -> tester on a tiny task, end to end.

Without ``--live`` it needs no API key: the scripted model server plays the model, while the
real Claude Agent SDK and CLI run the tools, so files are really written and the tester really
runs the code with Bash. Each agent branches from the previous one's head commit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentgrove.cli._live import format_elapsed
from agentgrove.errors import ModelUnavailable
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, elapsed_s
from agentgrove.runtime._homes import demo_parent
from agentgrove.runtime.claude import ClaudeRuntime, sandbox_available
from agentgrove.store._core import utcnow
from agentgrove.text import plain
from agentgrove.workspaces import init_repo, list_branches

TASK = "greet.py: print 'Hello, <name>!' for the name given as the first argument (default: world)"

STEPS = [
    ("spec-writer", f"Write SPEC.md for: {TASK}"),
    ("implementer", "Implement SPEC.md in greet.py."),
    ("tester", "Run greet.py with the argument Grove and check it follows SPEC.md."),
]


def run_demo(*, live: bool, console: Console, keep: bool = False) -> bool:
    """Run the three agents; print the table and branches. True when all three completed.
    The temporary repository is removed at the end unless ``keep``."""
    from agentgrove.testing import ModelServer, demo_script

    for var in ("GROVE_HOME", "GROVE_DB_URL"):  # the demo keeps its state in its own repository
        os.environ.pop(var, None)
    # Under a per-user 0700 parent that every agent's sandbox denies reading (another grove's
    # agents could read this one's database in a world-readable $TMPDIR/grove-demo-*).
    repo = Path(tempfile.mkdtemp(prefix="grove-demo-", dir=demo_parent()))
    init_repo(repo, {"README.md": "# demo\n\nA repository for the agentgrove demo.\n"})
    server = None
    if live:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ModelUnavailable(
                "grove demo --live needs ANTHROPIC_API_KEY; drop --live to use the scripted model"
            )
        runtime = ClaudeRuntime()
    else:
        server = ModelServer(demo_script()).start()
        # The scripted agents run only grove's own commands, in a temporary repository: without
        # bubblewrap they may run unconfined, and the demo says so. A live model may not.
        confined = sandbox_available()
        runtime = ClaudeRuntime(env=server.env(), sandbox="auto" if confined else "off")
        if not confined:
            console.print(
                "demo: bubblewrap/socat are not installed, so the scripted agents run unconfined "
                "in the temporary repository (apt-get install bubblewrap socat to confine them)",
                markup=False,
            )
    console.print(
        f"demo repository: {repo}"
        + ("" if live else f"  (scripted model at {server.url})" if server else "")
    )
    records: list[AgentRecord] = []
    try:
        with Grove.init(repo, runtime=runtime) as grove:
            base: str | None = None
            for role, task in STEPS:
                console.print(f"[bold]{role}[/]: {task}")
                agent = anyio_run(grove, role, task, base)
                records.append(agent)
                if agent.status is not AgentStatus.COMPLETED:
                    break
                base = agent.workspace.head_commit if agent.workspace else None
        if server is not None and len(records) == len(STEPS):
            server.assert_done()
    finally:
        if server is not None:
            server.stop()
    _print_table(console, records)
    console.print("branches:")
    for line in list_branches(repo):
        console.print(plain(f"  {line}"))
    if records and records[-1].output:
        console.print(Text.assemble("tester said: ", plain(records[-1].output)))
    if keep:
        console.print(plain(f"kept the demo repository: {repo}"))
    else:
        shutil.rmtree(repo, ignore_errors=True)
        console.print("removed the demo repository (grove demo --keep keeps it to look around)")
    return len(records) == len(STEPS) and all(r.status is AgentStatus.COMPLETED for r in records)


def anyio_run(grove: Grove, role: str, task: str, base: str | None) -> AgentRecord:
    return grove.run(role, task, base=base)


def _print_table(console: Console, records: list[AgentRecord]) -> None:
    table = Table("role", "status", "tokens in/out", "cost", "duration", "files changed")
    for r in records:
        files = ", ".join(r.workspace.files_changed) if r.workspace else ""
        table.add_row(
            r.role,
            r.status.value,
            f"{r.tokens_in}/{r.tokens_out}",
            f"${r.cost_usd:.4f}",
            format_elapsed(elapsed_s(r, utcnow()) or 0.0),
            plain(files or "-"),
        )
    console.print(table)
