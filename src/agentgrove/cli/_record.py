"""``grove dev record``: a loopback proxy to the Anthropic API that records each conversation
(replayed by ``grove dev model-server --replay``)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from agentgrove.cli._app import dev_app, print_exports
from agentgrove.errors import BadInput

DEFAULT_UPSTREAM = "https://api.anthropic.com"


@dev_app.command("record")
def record(
    to: Annotated[
        Path, typer.Option("--to", help="The recording to write (a new file, JSON Lines).")
    ],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8422,
    upstream: Annotated[
        str,
        typer.Option(
            help="The API to relay to (not read from ANTHROPIC_BASE_URL, which you point at "
            "this proxy)."
        ),
    ] = DEFAULT_UPSTREAM,
) -> None:
    """Serve a loopback proxy to the Anthropic Messages API until interrupted, saving each
    conversation to --to for grove dev model-server --replay. The agents' own key
    (ANTHROPIC_API_KEY) is relayed, never saved."""
    from agentgrove.testing import ModelServer, Script
    from agentgrove.testing._record import Recorder

    recorder = Recorder(to, upstream)
    server = ModelServer(Script(), port=port, forward=recorder)
    try:
        server.start()
    except OSError as exc:
        to.unlink(missing_ok=True)
        raise BadInput(
            f"cannot serve the recording proxy on 127.0.0.1:{port}: {exc.strerror}; "
            "choose another --port (0: any free port)"
        ) from None
    if recorder.upstream.removeprefix("http://").split("/")[0] in (
        f"127.0.0.1:{server.port}",
        f"localhost:{server.port}",
    ):
        server.stop()
        to.unlink(missing_ok=True)
        raise BadInput(f"--upstream {upstream}: that is this proxy itself; give the real API")
    print(f"recording proxy on {server.url} to {recorder.upstream}, saving to {to}", flush=True)
    # The CLI's key stays the one of the shell: only the address (and the settings the replay
    # server gives) change.
    env = {k: v for k, v in server.env().items() if k != "ANTHROPIC_API_KEY"}
    print_exports(env)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    typer.echo(f"recorded {recorder.recorded} request(s) to {to}", err=True)
