"""The interactive loop: prompt, run the line in a worker thread, repeat until exit or Ctrl-D.

Contracts:

* :meth:`Shell.run` returns when the user leaves (``exit``, ``quit``, Ctrl-D) or when its
  task is cancelled (``grove up`` shutting down); either way the terminal is restored. No
  command's failure ends it.
* Commands run in a worker thread (``anyio.to_thread``): some of them (``run``, ``workflow run
  --wait``) start their own event loop, and the prompt's loop — which in ``grove up`` also runs
  the worker and the dashboard — must keep going meanwhile.
* The status line is refreshed off the loop every ``refresh_s`` and after each command; with
  ``notices``, agents that ended since the last refresh get a line above the prompt (held while
  a command runs, so they never interleave with its output).
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import typer
from anyio.abc import TaskStatus
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from agentgrove.models import AgentStatus
from agentgrove.shell._completion import GroveCompleter, Kind, command_tree
from agentgrove.shell._dispatch import Dispatcher, Outcome
from agentgrove.shell._notices import FinishNotices
from agentgrove.shell._status import StatusLine, read_status
from agentgrove.store import Store
from agentgrove.text import one_line

HISTORY_FILE = "shell_history"
PROMPT = "grove> "


class Shell:
    def __init__(
        self,
        dispatcher: Dispatcher,
        completer: GroveCompleter,
        status: StatusLine,
        *,
        history: History | None = None,
        after_command: Callable[[Outcome], None] | None = None,
        notices: FinishNotices | None = None,
        refresh_s: float = 1.0,
    ) -> None:
        """``after_command`` runs on the loop after each line (``grove up`` wakes its worker
        there, since the command's spawn happened in another Grove)."""
        self.dispatcher = dispatcher
        self.status = status
        self._after_command = after_command
        self._notices = notices
        self._in_command = False
        self._refresh_s = refresh_s
        self._session: PromptSession[str] = PromptSession(
            PROMPT,
            completer=completer,
            history=history or InMemoryHistory(),
            bottom_toolbar=status,
            complete_while_typing=False,
        )

    def interrupt(self) -> bool:
        """Interrupt the running command (SIGINT while one runs); False if none runs."""
        return self.dispatcher.interrupt()

    async def run(self) -> None:
        await anyio.to_thread.run_sync(self.status.refresh)
        if self._notices is not None:
            await anyio.to_thread.run_sync(self._notices.start)
        with patch_stdout(raw=True):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh_forever)
                try:
                    await self._loop()
                finally:
                    tg.cancel_scope.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                # SIGINT stays with the caller's handler: at the prompt Ctrl-C is a key.
                line = await self._session.prompt_async(handle_sigint=False)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt: drop the line, like a shell
            except EOFError:
                return  # Ctrl-D
            self._in_command = True  # no notice until the command's own endings are known
            try:
                since = await self._mark()
                outcome = await anyio.to_thread.run_sync(
                    self.dispatcher, line, abandon_on_cancel=True
                )
                if since is not None:
                    await self._quiet(since, line)
            finally:
                self._in_command = False
            if self._after_command is not None:
                self._after_command(outcome)
            if outcome.quit:
                return
            await anyio.to_thread.run_sync(self.status.refresh)

    async def _refresh_forever(self) -> None:
        while True:
            await anyio.sleep(self._refresh_s)
            await anyio.to_thread.run_sync(self.status.refresh, abandon_on_cancel=True)
            if self._notices is not None and not self._in_command:
                for line in await anyio.to_thread.run_sync(
                    self._read_notices, abandon_on_cancel=True
                ):
                    print(line, flush=True)  # patch_stdout puts it above the prompt
            self._session.app.invalidate()

    async def _mark(self) -> int | None:
        if self._notices is None:
            return None
        try:
            return await anyio.to_thread.run_sync(self._notices.mark)
        except Exception:  # no database: the command will say so itself
            return None

    async def _quiet(self, since: int, line: str) -> None:
        assert self._notices is not None
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        with contextlib.suppress(Exception):  # at worst, a notice the command already showed
            await anyio.to_thread.run_sync(self._notices.shown_by_command, since, words)

    def _read_notices(self) -> list[str]:
        assert self._notices is not None
        try:
            return self._notices.poll()
        except Exception as exc:  # the shell outlives a briefly unreachable database
            return [one_line(f"(finished agents unavailable: {type(exc).__name__}: {exc})", 200)]


def build_shell(
    app: typer.Typer,
    store: Store,
    roles: Sequence[str],
    *,
    home: Path | None,
    after_command: Callable[[Outcome], None] | None = None,
) -> Shell:
    """The shell of one grove: history in ``home`` (none kept when None), roles and ids from
    ``store`` completed, its counts in the status line."""

    def values(kind: Kind) -> Sequence[str]:
        if kind == "role":
            return roles
        if kind == "agent":
            return [a.id for a in store.list_agents()]
        if kind == "run":
            return [r.id for r in store.list_runs()]
        if kind == "status":
            return [s.value for s in AgentStatus]
        from agentgrove.workflows import builtin_templates

        return list(builtin_templates())

    history = FileHistory(str(home / HISTORY_FILE)) if home is not None else None
    return Shell(
        Dispatcher(app),
        GroveCompleter(command_tree(app), values),
        StatusLine(lambda: read_status(store)),
        history=history,
        after_command=after_command,
        notices=FinishNotices(store),
    )


async def watch_signals(
    shell: Shell | None, stop: Callable[[str], None], *, task_status: TaskStatus[None]
) -> None:
    """SIGINT while a shell command runs interrupts that command; otherwise SIGINT and SIGTERM
    call ``stop`` with the signal's name. Handlers are in place when ``tg.start`` returns."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGINT and shell is not None and shell.interrupt():
                continue
            stop(signal.Signals(signum).name)
