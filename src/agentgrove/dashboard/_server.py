"""Serving the dashboard with uvicorn inside the caller's event loop (``grove dashboard``, or
``grove up`` beside a worker and a shell).

Every request must name this dashboard in its ``Host`` header (:class:`HostCheck`): a web page
the user visits cannot point a name it controls at 127.0.0.1 (DNS rebinding) and read the
transcripts. The token comes from ``GROVE_DASHBOARD_TOKEN``, ``--token-file`` or ``--token``
(the last is visible to every local user in ``ps``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

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
    see every transcript, otherwise), and a blank token anywhere."""
    if token is not None and not token.strip():
        raise BadInput(
            "the dashboard token is blank: give a real one (GROVE_DASHBOARD_TOKEN or "
            "--token-file PATH), or none for a read-only dashboard"
        )
    if not token and not is_loopback(host):
        raise BadInput(
            f"refusing to serve the dashboard on {host} without a token: pass --token "
            "(or set GROVE_DASHBOARD_TOKEN), or bind to 127.0.0.1"
        )


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise BadInput(f"--port {port}: give a port from 1 to 65535")


def check_port_free(host: str, port: int, *, alternative: str = "another --host") -> None:
    """Refuse, with one line, a port out of range, a host that does not resolve or a port that
    cannot be bound, before anything starts (rather than failing once a worker already runs)."""
    check_port(port)
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


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped). Refuses a file it cannot read and
    one that every local user can read (the token would be no secret)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInput(f"--token-file {path}: cannot read it ({reason})") from None
    if mode & stat.S_IROTH:
        raise BadInput(f"--token-file {path} is readable by every user: chmod 600 {path}")
    return text.strip()


def allowed_hosts(host: str, port: int) -> tuple[frozenset[str], bool]:
    """The ``Host`` header names a dashboard bound to ``host`` answers to, and whether any IP
    address literal is accepted too (bound to all interfaces: an address cannot be rebound,
    only a name can). Bound to loopback: localhost, 127.0.0.1 and [::1]."""
    names = {host.lower().strip("[]")}
    any_address = host in ("0.0.0.0", "::", "")
    if is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    if any_address:
        names |= {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names), any_address


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class HostCheck:
    """ASGI middleware: a request whose ``Host`` header is not one of :func:`allowed_hosts`
    with the dashboard's port gets 400 (protection against DNS rebinding)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.app = app
        self.port = port
        self.names, self.any_address = allowed_hosts(host, port)
        self.url = dashboard_url(host if not self.any_address else "127.0.0.1", port)

    def allows(self, header: str) -> bool:
        name, port = _split_host(header.strip().lower())
        if name is None or port != self.port:
            return False
        if name in self.names:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"host", b"").decode("latin-1")
            if not self.allows(header):
                body = (
                    f"Host {header!r} is not this dashboard's address: open {self.url} "
                    "(requests for other names are refused, against DNS rebinding)\n"
                ).encode()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _split_host(header: str) -> tuple[str | None, int | None]:
    """``("127.0.0.1", 8420)`` from ``127.0.0.1:8420``, ``("::1", 8420)`` from ``[::1]:8420``;
    a header without a port means port 80."""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None, None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not rest.startswith(":"):
            return None, None
        digits = rest[1:]
    else:
        name, _, digits = header.partition(":")
        if ":" in digits:
            return None, None
    if not name:
        return None, None
    if not digits:
        return name, 80
    return (name, int(digits)) if digits.isdigit() and len(digits) <= 5 else (None, None)


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
    check_port(port)
    sock = _bind(host, port)
    app = create_app(grove, token=token)
    config = uvicorn.Config(
        HostCheck(app, host, port),
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
