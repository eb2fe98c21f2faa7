"""Serving the dashboard with uvicorn inside the caller's event loop (``grove dashboard``, or
``grove up`` beside a worker and a shell)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import anyio
import uvicorn

from agentgrove.dashboard._app import create_app
from agentgrove.errors import BadInput
from agentgrove.grove import Grove

SHUTDOWN_GRACE_S = 3


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner (the CLI, ``grove up``) decides
    what SIGINT and SIGTERM do, and stops us by cancelling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve anything but loopback without a token (anyone could cancel agents, and
    see every transcript, otherwise)."""
    if not token and not is_loopback(host):
        raise BadInput(
            f"refusing to serve the dashboard on {host} without a token: pass --token "
            "(or set GROVE_DASHBOARD_TOKEN), or bind to 127.0.0.1"
        )


def check_port_free(host: str, port: int, *, alternative: str = "another --host") -> None:
    """Refuse, with one line, a host that does not resolve or a port that cannot be bound, before
    anything starts (rather than failing once a worker already runs)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadInput(f"--host {host}: cannot resolve it ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise BadInput(
                f"cannot serve the dashboard on {host}:{port} ({exc.strerror}): "
                f"choose another --port, or {alternative}"
            ) from None


def dashboard_url(host: str, port: int) -> str:
    """The address to print (an IPv6 literal in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def serve_dashboard(
    grove: Grove,
    *,
    host: str = "127.0.0.1",
    port: int = 8420,
    token: str | None = None,
    ready: anyio.Event | None = None,
) -> None:
    """Serve the dashboard until cancelled; ``ready`` is set once it accepts connections.

    Bad input (a non-loopback host without a token, a port that cannot be bound) raises
    :class:`BadInput` before anything is served. On cancellation, open event streams are
    ended, the server shuts down (at most :data:`SHUTDOWN_GRACE_S` for requests in flight)
    and the cancellation propagates.
    """
    check_binding(host, token)
    sock = _bind(host, port)
    app = create_app(grove, token=token)
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the process's logging alone
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    server = _Server(config)
    finished = anyio.Event()

    async def run() -> None:
        try:
            # Shielded: on cancellation we ask uvicorn to stop and wait for it to finish,
            # instead of tearing it down in the middle of its own shutdown.
            with anyio.CancelScope(shield=True):
                await server.serve(sockets=[sock])
        finally:
            sock.close()
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            while not server.started and not finished.is_set():
                await anyio.sleep(0.02)
            if ready is not None and server.started:
                ready.set()
            await finished.wait()
        finally:
            app.state.stopping.set()
            server.should_exit = True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BadInput(
            f"cannot serve the dashboard on {host}:{port}: {exc.strerror}; "
            "choose another --port or --host"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
