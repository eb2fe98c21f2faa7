"""`grove dashboard`: the web dashboard, until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import anyio
import typer

from agentgrove.cli._app import app, err_console, open_grove
from agentgrove.errors import BadInput

TOKEN_HELP = (
    "Enables the cancel and retry buttons (send it as 'Authorization: Bearer'). Other local "
    "users see it in ps: prefer GROVE_DASHBOARD_TOKEN or --token-file."
)
TOKEN_FILE_HELP = "Read the token from this file (not readable by other users)."


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The dashboard token from ``--token``/``GROVE_DASHBOARD_TOKEN`` or ``--token-file``
    (at most one of them); validated by ``check_binding``."""
    if token_file is None:
        return token
    if token is not None:
        raise BadInput("both a token (--token or GROVE_DASHBOARD_TOKEN) and --token-file: give one")
    from agentgrove.dashboard._server import read_token_file

    return read_token_file(token_file)


@app.command("dashboard")
def dashboard(
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8420,
    token: Annotated[
        str | None,
        typer.Option(envvar="GROVE_DASHBOARD_TOKEN", help=TOKEN_HELP, show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help=TOKEN_FILE_HELP, show_default=False)
    ] = None,
) -> None:
    """Serve the web dashboard: agents, transcripts, workflow runs live, budgets, cost."""
    # Imported here: FastAPI and uvicorn would add a fifth of a second to every grove command.
    from agentgrove.dashboard._server import (
        check_binding,
        check_port_free,
        dashboard_url,
        serve_dashboard,
    )

    token = resolve_token(token, token_file)
    check_binding(host, token)  # before opening anything
    check_port_free(host, port)
    with open_grove() as grove:
        ready = anyio.Event()

        async def main() -> None:
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            tg.cancel_scope.cancel()
                            return

                async def announce() -> None:
                    await ready.wait()
                    mode = "cancel/retry enabled" if token else "read-only"
                    err_console.print(
                        f"grove dashboard: {dashboard_url(host, port)} ({mode}); Ctrl-C stops it",
                        highlight=False,
                    )

                tg.start_soon(stop_on_signal)
                tg.start_soon(announce)
                await serve_dashboard(grove, host=host, port=port, token=token, ready=ready)
                tg.cancel_scope.cancel()

        anyio.run(main)
