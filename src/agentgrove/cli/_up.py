"""`grove up`: database, worker, dashboard and shell in one process, stopped in reverse order.

Start-up: ``Grove.init`` (creates and migrates the database; idempotent), then on one event
loop the worker (whose ``run`` cleans up after a crash and reconciles workflow runs before its
first claim), the dashboard, and the shell. Shutdown — SIGINT/SIGTERM, or leaving the shell —
goes the other way: the shell closes, the dashboard stops, then the worker drains (in-flight
agents get ``grace_s``, then return to pending without losing an attempt). Each step is
printed; a clean shutdown exits 0 with no agent of this worker left executing.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from anyio.abc import TaskStatus

from agentgrove.cli._app import (
    LOG_FORMAT_HELP,
    ConcurrencyOption,
    app,
    check_concurrency,
    log_format,
)
from agentgrove.cli._dashboard import TOKEN_FILE_HELP, TOKEN_HELP, resolve_token
from agentgrove.errors import BadInput, GroveError
from agentgrove.grove import Grove

if TYPE_CHECKING:
    from agentgrove.worker import Worker

DEFAULT_PORT = 8420


@app.command()
def up(
    concurrency: ConcurrencyOption = None,
    host: Annotated[str, typer.Option(help="Dashboard address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Dashboard port.")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(envvar="GROVE_DASHBOARD_TOKEN", help=TOKEN_HELP, show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help=TOKEN_FILE_HELP, show_default=False)
    ] = None,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="No web UI.")] = False,
    no_shell: Annotated[
        bool, typer.Option("--no-shell", help="Headless, for services and tests.")
    ] = False,
    log_format_name: Annotated[
        str, typer.Option("--log-format", metavar="FORMAT", help=LOG_FORMAT_HELP)
    ] = "text",
) -> None:
    """Start everything: database, worker, dashboard, shell. Ctrl-D or SIGTERM stops it."""
    check_concurrency(concurrency)
    log_format(log_format_name)
    if not no_shell and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput("no terminal for grove up's shell: add --no-shell to run headless")
    if not no_dashboard:
        from agentgrove.dashboard._server import check_binding, check_port_free

        token = resolve_token(token, token_file)
        check_binding(host, token)
        check_port_free(host, port, alternative="--no-dashboard")
    from agentgrove.worker import Worker  # here: every command imports this module

    grove = Grove.init()
    with grove:
        worker = Worker(grove.service, grove.config.worker, concurrency=concurrency)
        log_format(log_format_name, worker=worker.owner)
        say(f"database ready: {_safe_url(grove.config.db_url)}")
        try:
            anyio.run(
                _serve,
                grove,
                worker,
                None if no_dashboard else (host, port, token),
                not no_shell,
            )
        except ExceptionGroup as group:
            # A task failed on purpose (say the port was taken in the meantime): one line.
            refused, _ = group.split(GroveError)
            if refused is None:
                raise
            raise _first(refused) from None
    say("stopped")


async def _serve(
    grove: Grove, worker: Worker, dashboard: tuple[str, int, str | None] | None, shell: bool
) -> None:
    stopping = anyio.Event()
    prompt = None
    if shell:
        from agentgrove.cli._registry import full_app
        from agentgrove.shell import build_shell

        prompt = build_shell(
            full_app(),
            grove.store,
            list(grove.config.roles),
            home=grove.config.home,
            # A spawn from the shell went through another Grove: wake our worker at once.
            after_command=lambda _outcome: grove.service.wakeup.notify(),
        )

    def stop(reason: str) -> None:
        if not stopping.is_set():
            say(f"{reason}: shutting down")
            stopping.set()

    from agentgrove.shell import watch_signals

    async with anyio.create_task_group() as tg:
        await tg.start(watch_signals, prompt, stop)
        worker_done = anyio.Event()

        async def run_worker() -> None:
            try:
                stats = await worker.run()
                say(f"worker {stats.summary()}")
            finally:
                worker_done.set()

        say(
            f"worker {worker.owner}: concurrency {worker.concurrency} "
            "(reconciling workflow runs first)"
        )
        tg.start_soon(run_worker)

        dashboard_scope = anyio.CancelScope()
        dashboard_done = anyio.Event()
        if dashboard is not None:
            await tg.start(_run_dashboard, grove, dashboard, dashboard_scope, dashboard_done)
        else:
            dashboard_done.set()

        shell_scope = anyio.CancelScope()
        shell_done = anyio.Event()
        if prompt is not None:

            async def run_shell() -> None:
                try:
                    with shell_scope:
                        await prompt.run()
                    stop("left the shell")
                finally:
                    shell_done.set()

            tg.start_soon(run_shell)
        else:
            shell_done.set()

        await stopping.wait()
        if prompt is not None:
            prompt.interrupt()  # a command still running in the shell's thread
            shell_scope.cancel()
            await shell_done.wait()
            say("shell closed")
        if dashboard is not None:
            dashboard_scope.cancel()
            await dashboard_done.wait()
            say("dashboard stopped")
        say(f"worker: {worker.stopping_note()}")
        worker.request_stop()
        await worker_done.wait()
        tg.cancel_scope.cancel()  # the signal watcher


async def _run_dashboard(
    grove: Grove,
    where: tuple[str, int, str | None],
    scope: anyio.CancelScope,
    done: anyio.Event,
    *,
    task_status: TaskStatus[None],
) -> None:
    """Serve the dashboard until ``scope`` is cancelled; started once it accepts requests."""
    from agentgrove.dashboard import serve_dashboard
    from agentgrove.dashboard._server import dashboard_url

    host, port, token = where
    ready = anyio.Event()

    async def serve() -> None:
        await serve_dashboard(grove, host=host, port=port, token=token, ready=ready)
        raise GroveError(f"the dashboard on {host}:{port} stopped by itself; or use --no-dashboard")

    try:
        with scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await ready.wait()
                mode = "cancel/retry enabled" if token else "read-only"
                say(f"dashboard on {dashboard_url(host, port)} ({mode})")
                task_status.started()
    finally:
        done.set()


def _first(group: BaseExceptionGroup[GroveError]) -> GroveError:
    first = group.exceptions[0]
    return first if isinstance(first, GroveError) else _first(first)


def _safe_url(url: str) -> str:
    """The database URL without its password, for printing."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


log = logging.getLogger("agentgrove.cli.up")


def say(message: str) -> None:
    """A line about ``grove up`` itself (``grove up: ...``, or a JSON object)."""
    log.info(message, extra={"event": "up", "agent": None, "run": None})
