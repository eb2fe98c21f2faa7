"""A webhook receiver on loopback for the notification tests: records every POST, answers
``status``, and can hold each request until the test releases it."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status = status
        self.hold: threading.Event | None = None
        """Set: each request waits for it before being answered."""
        self.got: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook/SECRET-PATH"

    def bodies(self) -> list[Any]:
        with self._lock:
            return [json.loads(body) for _, body in self.got]

    def record(self, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.got.append((headers, body))


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.record(dict(self.headers), body)
        if self.server.hold is not None:
            self.server.hold.wait(120)
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"nope" if self.server.status >= 400 else b"ok")

    def log_message(self, *_args: object) -> None:
        pass


def free_port() -> int:
    """A loopback port nothing listens on now (for a receiver that is down at first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
