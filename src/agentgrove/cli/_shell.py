"""`grove shell`: the interactive prompt on its own (``grove up`` runs it with the services)."""

from __future__ import annotations

import sys

import anyio

from agentgrove.cli._app import app, open_grove
from agentgrove.errors import BadInput


@app.command()
def shell() -> None:
    """Interactive prompt: grove commands with history, Tab completion and a status line."""
    from agentgrove.cli._registry import full_app
    from agentgrove.shell import build_shell, watch_signals

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput("grove shell needs a terminal: run the commands directly (grove spawn ...)")
    with open_grove() as grove:
        roles = list(grove.config.roles)
        prompt = build_shell(full_app(), grove.store, roles, home=grove.config.home)

        async def main() -> None:
            async with anyio.create_task_group() as tg:

                def stop(_signal: str) -> None:
                    tg.cancel_scope.cancel()

                await tg.start(watch_signals, prompt, stop)
                await prompt.run()
                tg.cancel_scope.cancel()

        anyio.run(main)
