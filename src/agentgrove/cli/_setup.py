"""Set-up and process commands: init, roles, worker, demo, dev model-server."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from anyio.abc import TaskStatus
from rich.table import Table

from agentgrove.cli._app import (
    LOG_FORMAT_HELP,
    ConcurrencyOption,
    app,
    check_concurrency,
    console,
    dev_app,
    err_console,
    log_format,
    open_grove,
    print_error,
    print_exports,
)
from agentgrove.config import find_root, load_config, with_worker
from agentgrove.errors import BadInput
from agentgrove.logs import say
from agentgrove.text import plain

if TYPE_CHECKING:
    from agentgrove.testing import ModelServer

log = logging.getLogger("agentgrove.cli.worker")


@app.command()
def init() -> None:
    """Create the grove home (.grove/ at the repository root) and its database."""
    from agentgrove.grove import Grove

    grove = Grove.init()
    with grove:
        where = grove.config.home
        if not grove.config.is_git:
            err_console.print(
                "[bold yellow]WARNING: not a git repository: agents will run in this directory "
                "itself, without isolation.[/]"
            )
    print(f"initialised grove at {where}")


@app.command()
def roles() -> None:
    """List the roles (built in, and from grove.toml)."""
    config = load_config()
    table = Table(
        "role", "model", "tools", "max turns", "max $", "timeout", "description", box=None
    )
    for role in sorted(config.roles.values(), key=lambda r: r.name):
        table.add_row(
            plain(role.name),
            plain(role.model),
            plain(",".join(role.tools)),
            str(role.max_turns),
            f"{role.max_budget_usd:g}",
            f"{role.timeout_s:g}s",
            plain(role.description),
        )
    console.print(table)


@app.command()
def doctor() -> None:
    """Check what agents need here: the Bash sandbox, the Claude CLI, git. Exit 1 if any is
    missing."""
    from agentgrove.runtime._environment import real_cli
    from agentgrove.runtime.claude import sandbox_available, sandbox_works

    mode = load_config().runtime.sandbox
    checks: list[tuple[str, str]] = []
    if mode == "off":
        checks.append(("WARN", 'sandbox: [runtime] sandbox = "off": agents\' Bash runs unconfined'))
    elif not sandbox_available():
        checks.append(
            (
                "FAIL",
                "sandbox: bubblewrap/socat are not installed, so agents whose role has Bash will "
                'not start: apt-get install bubblewrap socat (or set [runtime] sandbox = "off" '
                "in grove.toml to run them unconfined)",
            )
        )
    else:
        problem = sandbox_works()
        if problem is None:
            checks.append(
                ("ok", f"sandbox: bubblewrap and socat found ([runtime] sandbox = {mode!r})")
            )
        else:
            checks.append(
                ("FAIL", f"sandbox: bubblewrap is installed but does not work: {problem}")
            )
    try:
        checks.append(("ok", f"Claude CLI: {real_cli()}"))
    except FileNotFoundError as exc:
        checks.append(("FAIL", f"Claude CLI: {exc}: reinstall agentgrove (scripts/setup)"))
    git = shutil.which("git")
    checks.append(("ok", f"git: {git}") if git else ("FAIL", "git: not found: apt-get install git"))
    for status, line in checks:
        console.print(f"{status:<4}  {line}", markup=False, highlight=False)
    if any(status == "FAIL" for status, _ in checks):
        sys.exit(1)


@app.command()
def worker(
    concurrency: ConcurrencyOption = None,
    drain: Annotated[
        bool,
        typer.Option(
            help="Exit once no agent (of --roles, if given) is pending or executing anywhere."
        ),
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Seconds in-flight agents get on shutdown before they return to pending "
            "(default: [worker] grace_s in grove.toml, else 30).",
        ),
    ] = None,
    roles: Annotated[
        str | None,
        typer.Option(help="Claim only agents of these roles (comma-separated, e.g. coder,tester)."),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(help="The clone to work on, as if started there (default: this one)."),
    ] = None,
    print_systemd_unit: Annotated[
        bool,
        typer.Option(
            "--print-systemd-unit",
            help="Print a systemd unit running this worker (with these options) and exit.",
        ),
    ] = False,
    log_format_name: Annotated[
        str, typer.Option("--log-format", metavar="FORMAT", help=LOG_FORMAT_HELP)
    ] = "text",
) -> None:
    """Claim and run pending agents until SIGINT/SIGTERM (or, with --drain, until idle)."""
    check_concurrency(concurrency)
    log_format(log_format_name)  # checked before anything else is done
    root = _worker_repo(repo) if repo is not None else None
    if root is not None:
        os.chdir(root)  # everything after (config, GROVE_HOME, worktrees) as if started there
    config = load_config()
    only_roles = _parse_roles(roles, set(config.roles)) if roles is not None else None
    settings = config.worker
    if grace is not None:  # validated as grove.toml's grace_s is (finite, in range)
        settings = with_worker(config, grace_s=grace).worker
    if print_systemd_unit:
        args = [
            *(["--roles", ",".join(only_roles)] if only_roles else []),
            *(["--repo", str(config.root)] if root is not None else []),
            *(["--concurrency", str(concurrency)] if concurrency is not None else []),
            *(["--grace", f"{settings.grace_s:g}"] if grace is not None else []),
        ]
        from agentgrove.systemd_unit import render_unit

        sys.stdout.write(render_unit(repo=config.root, worker_args=args, grace_s=settings.grace_s))
        return
    # Imported here, not at the top: every command imports this module.
    from agentgrove.worker import Worker, check_repository

    with open_grove() as grove:
        notes = check_repository(grove.config, grove.store)  # before any claim
        w = Worker(grove.service, settings, concurrency=concurrency, drain=drain, roles=only_roles)
        log_format(log_format_name, worker=w.owner)
        for note in notes:
            say(log, "worker.repository", note, level=logging.INFO)

        async def main() -> None:
            async with anyio.create_task_group() as tg:

                async def watch_signals(*, task_status: TaskStatus[None]) -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        task_status.started()
                        async for signum in signals:
                            name = signal.Signals(signum).name
                            say(
                                log,
                                "worker.stopping",
                                f"{name}: {w.stopping_note()}",
                                level=logging.INFO,
                            )
                            w.request_stop()

                await tg.start(watch_signals)  # handlers in place before the first claim
                stats = await w.run()
                say(log, "worker.stopped", stats.summary(), level=logging.INFO)
                tg.cancel_scope.cancel()

        shown_roles = f", roles {','.join(only_roles)}" if only_roles else ""
        say(
            log,
            "worker.started",
            f"started as {w.owner}: concurrency {w.concurrency}{shown_roles}",
            level=logging.INFO,
        )
        anyio.run(main)


def _worker_repo(repo: Path) -> Path:
    """The root of the clone ``--repo`` names, or :class:`BadInput`."""
    path = repo.expanduser()
    if not path.is_dir():
        raise BadInput(f"--repo {repo}: no such directory; give the path of a clone")
    root, is_git = find_root(path)
    if not is_git:
        raise BadInput(
            f"--repo {repo}: not a git repository; give the path of a clone "
            "(git clone URL DIR, then grove init in DIR)"
        )
    return root


def _parse_roles(raw: str, known: set[str]) -> list[str]:
    """``--roles a,b`` as a sorted list of known role names, or :class:`BadInput`."""
    names = sorted({name.strip() for name in raw.split(",") if name.strip()})
    if not names:
        raise BadInput("--roles: give one or more role names, comma-separated (grove roles)")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BadInput(
            f"--roles: unknown role {', '.join(map(repr, unknown))}; known roles: "
            f"{', '.join(sorted(known))}"
        )
    return names


@app.command()
def demo(
    live: Annotated[bool, typer.Option(help="Use the real API (needs ANTHROPIC_API_KEY).")] = False,
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary repository afterwards (it is removed).")
    ] = False,
) -> None:
    """spec-writer -> implementer -> tester on a tiny task, in a fresh temporary repository."""
    from agentgrove.demo import run_demo

    ok = run_demo(live=live, console=console, keep=keep)
    sys.exit(0 if ok else 1)


@dev_app.command(
    "model-server",
    help=(
        "Serve a scripted Anthropic Messages API until interrupted (no API key needed).\n\n"
        "With --script FILE.yaml, agents do what the script says for their role and task "
        '(docs/scripting.md). Without it, a task "Create PATH containing TEXT" writes that '
        "file, and any other task fails, naming --script. With --replay FILE, the "
        "conversations grove dev record saved are played back."
    ),
)
def model_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8421,
    script: Annotated[
        Path | None,
        typer.Option(
            help="A YAML script of what each agent does, matched by role and task "
            "(docs/scripting.md)."
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Play back a recording of grove dev record, by role and turn."),
    ] = None,
) -> None:
    """The scripted model server: the playground, or ``--script``'s script (help above)."""
    from agentgrove.testing import ModelServer, ScriptError, load_script, playground_script

    if script is not None and replay is not None:
        raise BadInput("give --script or --replay, not both")
    if replay is not None:
        from agentgrove.testing._replay import replay_server

        server, replayer = replay_server(
            replay, port, lambda line: print(line, file=sys.stderr, flush=True)
        )
    elif script is None:
        server = ModelServer(playground_script(), port=port)
    else:
        try:
            scripted = load_script(script)
        except ScriptError as exc:
            for problem in exc.problems:
                print_error(problem)
            sys.exit(2)
        hint = f"the script {script} has no entry or turn for it (docs/scripting.md)"
        server = ModelServer(scripted, port=port, hint=hint)
    try:
        server.start()
    except OSError as exc:
        raise BadInput(
            f"cannot serve the model server on 127.0.0.1:{port}: {exc.strerror}; "
            "choose another --port (0: any free port)"
        ) from None
    print(f"scripted model server on {server.url}", flush=True)
    # A line to paste into the shell that will run grove (point the CLI at this server).
    print_exports(server.env())
    # SIGTERM (kill, a test's terminate) stops it as Ctrl-C does, so the report below is made.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if script is not None:
        sys.exit(_report_script(server))
    if replay is not None:
        lines, code = replayer.report()
        print("\n".join(lines), file=sys.stderr)
        sys.exit(code)


def _report_script(server: ModelServer) -> int:
    """Say on stderr what a script's server saw go wrong; 1 if anything did, else 0: each
    unexpected request, and each scripted turn never served (a script meant for a workflow
    that did not run as it describes)."""
    problems = [*server.errors, *(f"unconsumed: {u}" for u in server.script.unconsumed())]
    for problem in problems:
        print(problem, file=sys.stderr)
    served = len(server.requests)
    summary = f"scripted model server: {served} request(s) served"
    print(f"{summary}, {len(problems)} problem(s)" if problems else summary, file=sys.stderr)
    return 1 if problems else 0
