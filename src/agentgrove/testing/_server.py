"""Loopback HTTP server speaking the Anthropic Messages API from a :class:`Script`.

Point the Claude Code CLI at it with :meth:`ModelServer.env`. Every request
the script does not expect is answered with HTTP 400 *and* recorded in
:attr:`ModelServer.errors`, so :meth:`ModelServer.assert_done` fails loudly.
Given a ``forward`` handler instead, the server hands it every request whole
and sends back its :class:`RawReply` (the recording proxy, ``_record``).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from agentgrove.testing._raw import Exchange, Forward, RawReply
from agentgrove.testing._request import ModelRequest
from agentgrove.testing._script import Script
from agentgrove.testing._turns import Reply, Turn
from agentgrove.testing._wire import (
    encode_sse,
    error_body,
    estimate_tokens,
    message_body,
    new_message_id,
    sse_events,
)

__all__ = ["ModelServer"]

_MESSAGES = "/v1/messages"
_COUNT_TOKENS = "/v1/messages/count_tokens"
_MODELS = "/v1/models"
_MODEL_IDS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5")
# Headers that describe one hop's connection: never copied from a RawReply.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: ModelServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # --- plumbing -------------------------------------------------------
    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _abort(self) -> None:
        """Close the connection abruptly (no further bytes)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _forwarded(self) -> bool:
        """Hand the request whole to the server's ``forward`` handler, if it has one."""
        forward = self.server.owner.forward
        if forward is None:
            return False
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = [(name.lower(), value) for name, value in self.headers.items()]
        reply = forward(Exchange(self.command, self.path, headers, body))
        try:
            self._send_raw(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return True

    def _send_raw(self, reply: RawReply) -> None:
        """Send ``reply`` as it is (see :class:`RawReply`)."""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if reply.chunks is None:
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in reply.chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            close = getattr(reply.chunks, "close", None)
            if callable(close):
                close()  # a generator relaying a stream lets go of its upstream now

    # --- verbs ----------------------------------------------------------
    def do_GET(self) -> None:
        if self._forwarded():
            return
        if urlsplit(self.path).path.rstrip("/") == _MODELS:
            if self._refused():
                return
            self._send_json(200, {"data": [{"type": "model", "id": m} for m in _MODEL_IDS]})
            return
        self._not_found()

    def _refused(self) -> bool:
        """Answer 401 when the server was told to refuse every key (auth-failure tests)."""
        if not self.server.owner.refuse_auth:
            return False
        message = "invalid x-api-key"
        self._send_json(401, error_body("authentication_error", message))
        return True

    def do_HEAD(self) -> None:
        if not self._forwarded():
            self._not_found()

    def do_PUT(self) -> None:
        if not self._forwarded():
            self._not_found()

    def do_DELETE(self) -> None:
        if not self._forwarded():
            self._not_found()

    def _not_found(self) -> None:
        message = f"scripted model server: no such endpoint {self.command} {self.path}"
        self.server.owner.record_error(message)
        self._send_json(404, error_body("not_found_error", message))

    def do_POST(self) -> None:
        if self._forwarded():
            return
        path = urlsplit(self.path).path.rstrip("/")
        if path not in (_MESSAGES, _COUNT_TOKENS):
            self._read_body()
            self._not_found()
            return
        body = self._read_body()
        if self._refused():
            return
        if body is None:
            message = f"scripted model server: request body is not a JSON object ({self.path})"
            self.server.owner.record_error(message)
            self._send_json(400, error_body("invalid_request_error", message))
            return
        if path == _COUNT_TOKENS:
            self._send_json(200, {"input_tokens": estimate_tokens(body)})
            return
        request = ModelRequest.from_body(body, self.headers.get("x-claude-code-session-id"))
        owner = self.server.owner
        number = owner.record_request(request)
        resolution = owner.script.resolve(request)
        if resolution.reply is None:
            message = f"scripted model server: unexpected request #{number}: {resolution.error}"
            if owner.hint:
                message = f"{message}; {owner.hint}"
            owner.record_error(message)
            self._send_json(400, error_body("invalid_request_error", message))
            return
        try:
            self._reply(request, resolution.reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- replies --------------------------------------------------------
    def _reply(self, request: ModelRequest, reply: Reply) -> None:
        if isinstance(reply, RawReply):
            self._send_raw(reply)
        elif isinstance(reply, Turn):
            self._send_turn(request, reply, delay_s=0.0)
        elif reply.kind == "status":
            headers: dict[str, str] = {}
            if reply.retry_after is not None:
                seconds = reply.retry_after
                headers["retry-after"] = (
                    str(int(seconds)) if seconds == int(seconds) else str(seconds)
                )
            self._send_json(reply.status_code, error_body(reply.error_type, reply.message), headers)
        elif reply.kind == "slow":
            self._send_turn(request, reply.turn, delay_s=reply.delay_s)
        else:
            self._send_turn(request, None, delay_s=0.0)

    def _send_turn(self, request: ModelRequest, turn: Turn | None, delay_s: float) -> None:
        """Send ``turn``; stall ``delay_s`` after ``message_start``; ``None`` = drop after it."""
        stop = self.server.owner.stopping
        message_id = new_message_id()
        if not request.stream:
            if delay_s > 0 and stop.wait(delay_s):
                self._abort()
                return
            if turn is None:
                self._abort()
                return
            self._send_json(200, message_body(turn, request.model, message_id))
            return
        events = sse_events(turn if turn is not None else Turn([]), request.model, message_id)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(encode_sse(*events[0]))
        self.wfile.flush()
        if delay_s > 0 and stop.wait(delay_s):
            self._abort()
            return
        if turn is None:
            self._abort()
            return
        for event, data in events[1:]:
            self.wfile.write(encode_sse(event, data))
        self.wfile.flush()


class ModelServer:
    """Scripted Anthropic Messages API server on a background daemon thread.

    Use as a context manager (or :meth:`start` / :meth:`stop`). ``port=0``
    picks a free port; :attr:`url` and :attr:`port` are valid once started.
    :attr:`requests` and :attr:`errors` are snapshots, safe to read any time.
    """

    def __init__(
        self,
        script: Script,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refuse_auth: bool = False,
        hint: str = "",
        forward: Forward | None = None,
    ) -> None:
        """``refuse_auth``: answer every request with 401, as the real API does to a bad key.
        ``GET /v1/models`` (the preflight of `grove run`) is served; it is not a scripted turn.
        ``hint``: said after the description of each unexpected request (what to do).
        ``forward``: hand every request (any verb, any path) to it instead of ``script``."""
        self.script = script
        self.refuse_auth = refuse_auth
        self.hint = hint
        self.forward = forward
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[ModelRequest] = []
        self._errors: list[str] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        """Set by :meth:`stop`; stalled replies wait on it."""

    # --- lifecycle ------------------------------------------------------
    def start(self) -> ModelServer:
        """Bind and serve in a daemon thread; idempotent. Returns ``self``."""
        if self._httpd is not None:
            return self
        self.stopping.clear()
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"model-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled replies and close the socket; idempotent."""
        self.stopping.set()
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Start if needed and block until :meth:`stop` is called (or Ctrl-C)."""
        self.start()
        try:
            self.stopping.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ------------------------------------------------------
    @property
    def port(self) -> int:
        """Bound TCP port (raises ``RuntimeError`` before :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("ModelServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables pointing the Claude Code CLI at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "scripted-model-server",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ENABLE_TOOL_SEARCH": "false",
        }

    # --- records --------------------------------------------------------
    def record_request(self, request: ModelRequest) -> int:
        """Append ``request``; returns its 1-based number."""
        with self._lock:
            self._requests.append(request)
            return len(self._requests)

    def record_error(self, message: str) -> None:
        """Append an error description."""
        with self._lock:
            self._errors.append(message)

    @property
    def requests(self) -> list[ModelRequest]:
        """Copy of every ``/v1/messages`` request seen, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Copy of the unexpected-request / bad-endpoint descriptions."""
        with self._lock:
            return list(self._errors)

    def assert_done(self) -> None:
        """Raise ``AssertionError`` if any request was unexpected or any scripted turn unserved."""
        problems = [f"unexpected: {e}" for e in self.errors]
        problems += [f"unconsumed: {u}" for u in self.script.unconsumed()]
        if problems:
            raise AssertionError("scripted model server:\n  " + "\n  ".join(problems))
