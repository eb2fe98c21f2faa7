"""Recording model conversations: the file format, and the proxy that writes it.

A recording is a JSON Lines file: a :class:`RecordingHeader` line, then one
:class:`RecordedExchange` line per ``POST /v1/messages`` request, in the order their
responses completed. An exchange holds the request's role, conversation (numbered in order of
first appearance in the recording) and turn index (``ModelRequest.turn_index``), a
:class:`RequestSummary` of what is compared on replay, and the full response: status, a few
headers and the body byte for byte (for a streamed reply, the raw server-sent events).

:class:`Recorder` is a ``forward`` handler for :class:`ModelServer`: it relays every request to
the upstream API as it came (the client's ``x-api-key`` / ``authorization`` included, never
stored), streams the response back while it arrives and appends the exchange to the file.
Other paths (``/v1/messages/count_tokens``, ``/v1/models``...) are relayed, not recorded.

Secrets never reach the file: request headers are not stored at all, and every stored text
(the summary and the response body) goes through a :class:`Redactor` given the environment's
secrets plus the credentials of the request's headers.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from agentgrove.errors import BadInput
from agentgrove.secrets import Redactor
from agentgrove.testing._raw import Exchange, RawReply
from agentgrove.testing._request import ModelRequest, strip_system_reminders
from agentgrove.testing._wire import error_body

__all__ = [
    "FORMAT",
    "RecordedExchange",
    "RecordedResponse",
    "Recorder",
    "Recording",
    "RecordingHeader",
    "RequestSummary",
    "SummaryBlock",
    "load_recording",
    "summarize",
]

log = logging.getLogger("agentgrove.testing.record")

FORMAT: Final = "agentgrove-recording"
VERSION: Final = 1
_MESSAGES = "/v1/messages"
# Request headers that describe the hop to the proxy, not the request: not relayed.
_NOT_RELAYED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "accept-encoding",
    }
)
# Response headers that describe the upstream's hop: not relayed.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)
# Response headers worth keeping in the file (the rest is the upstream's connection detail).
_KEPT_HEADERS = ("content-type", "retry-after", "x-should-retry", "request-id")
_CREDENTIAL_HEADERS = ("x-api-key", "authorization")
_UPSTREAM_TIMEOUT_S = 600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordingHeader(_Strict):
    """First line of a recording."""

    format: Literal["agentgrove-recording"]
    version: Literal[1]
    upstream: str
    started: str


class SummaryBlock(_Strict):
    """One block of the request's last user message, as compared on replay: a ``tool_result``
    (its text and ``is_error`` flag) or a ``text`` that is not a system reminder."""

    type: Literal["tool_result", "text"]
    text: str
    is_error: bool = False


class RequestSummary(_Strict):
    """What identifies a request on replay: its ``task`` (``ModelRequest.prompt``) and the new
    content it brings (``content``: the blocks of its last user message); texts normalized
    (reminders stripped, the run's working directory as ``{cwd}``, its agent id as
    ``{agent}``) and redacted."""

    model: str
    stream: bool
    task: str
    content: list[SummaryBlock]


class RecordedResponse(_Strict):
    """The upstream's answer: ``body`` is the bytes as text (``encoding`` ``utf-8``) or, for a
    body that is not UTF-8, base64."""

    status: int
    headers: dict[str, str]
    body: str
    encoding: Literal["utf-8", "base64"] = "utf-8"

    def body_bytes(self) -> bytes:
        """The body as it was sent."""
        if self.encoding == "base64":
            return base64.b64decode(self.body)
        return self.body.encode()


class RecordedExchange(_Strict):
    """One ``POST /v1/messages`` request and its response."""

    conversation: int
    role: str | None
    turn: int
    request: RequestSummary
    response: RecordedResponse


@dataclass(frozen=True)
class Recording:
    """A loaded recording file."""

    path: Path
    header: RecordingHeader
    exchanges: list[RecordedExchange]


def _normalize(text: str, request: ModelRequest) -> str:
    text = strip_system_reminders(text)
    if request.cwd is not None:
        text = text.replace(str(request.cwd), "{cwd}")
    if request.agent_id:
        text = text.replace(request.agent_id, "{agent}")
    return text


def _block_text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                value = block.get("text")
                if isinstance(value, str):
                    parts.append(value)
    return "\n".join(parts)


def summarize(request: ModelRequest, redact_text: Callable[[str], str]) -> RequestSummary:
    """The :class:`RequestSummary` of ``request`` (the same function on record and replay, so
    that what is compared was normalized and redacted alike)."""
    blocks: list[SummaryBlock] = []
    last = request.messages[-1] if request.messages else {}
    content = last.get("content") if last.get("role") == "user" else None
    items = [{"type": "text", "text": content}] if isinstance(content, str) else content
    for block in items if isinstance(items, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_result":
            text = _normalize(_block_text(block.get("content")), request)
            blocks.append(
                SummaryBlock(
                    type="tool_result",
                    text=redact_text(text),
                    is_error=block.get("is_error") is True,
                )
            )
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            text = _normalize(block["text"], request)
            if text:
                blocks.append(SummaryBlock(type="text", text=redact_text(text)))
    return RequestSummary(
        model=request.model,
        stream=request.stream,
        task=redact_text(_normalize(request.prompt, request)),
        content=blocks,
    )


def _problem(path: Path, line: int, exc: ValidationError | ValueError) -> BadInput:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the line"
        detail = f"{where}: {first['msg']}"
    else:
        detail = "not JSON"
    what = "the header of a recording" if line == 1 else "a recorded exchange"
    return BadInput(
        f"--replay {path}: line {line} is not {what} ({detail}); "
        "give a file written by grove dev record --to FILE"
    )


def load_recording(path: Path) -> Recording:
    """Read and validate a recording; :class:`BadInput` (one line) if it is missing or bad."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInput(
            f"--replay {path}: cannot read it ({reason}); "
            "give a file written by grove dev record --to FILE"
        ) from None
    if not lines:
        raise BadInput(
            f"--replay {path}: the file is empty; give a file written by grove dev record --to FILE"
        )
    try:
        header = RecordingHeader.model_validate_json(lines[0])
    except ValidationError as exc:
        raise _problem(path, 1, exc) from None
    exchanges: list[RecordedExchange] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            exchanges.append(RecordedExchange.model_validate_json(line))
        except ValidationError as exc:
            raise _problem(path, number, exc) from None
    return Recording(path, header, exchanges)


def _without_userinfo(url: str) -> str:
    """``url`` without the ``user:password@`` of its authority: the form grove stores, shows
    and logs (the recording file is shared; the relay never sends URL credentials)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _upstream_parts(upstream: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of an ``http(s)://host[:port][/prefix]`` URL
    (given without its userinfo), or :class:`BadInput`."""
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(
            f"--upstream {upstream!r}: give an http:// or https:// URL, "
            "e.g. https://api.anthropic.com"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadInput(f"--upstream {upstream!r}: the port is not a number") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class Recorder:
    """The recording proxy's ``forward`` handler (thread-safe): relays each request to
    ``upstream`` and appends each ``/v1/messages`` exchange to ``path``.

    ``path`` must not exist yet (:class:`BadInput` otherwise, or when its directory does not,
    or ``upstream`` is no http(s) URL); the header line is written at once. ``upstream``'s
    userinfo (``user:password@``) is dropped, never sent, stored nor shown (:attr:`upstream`
    is the URL without it).
    """

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        # Userinfo is dropped: what is relayed is the client's own headers, and the URL is
        # written to the file and every message.
        self.upstream = _without_userinfo(upstream).rstrip("/")
        self._scheme, self._host, self._port, self._prefix = _upstream_parts(self.upstream)
        if self.upstream != upstream.rstrip("/"):
            log.warning(
                "--upstream: the user:password@ part is neither sent upstream nor stored "
                "(the agents' own key is relayed)"
            )
        self._lock = threading.Lock()
        self._conversations: dict[str, int] = {}
        self._redactors: dict[tuple[str, ...], Redactor] = {}
        self.recorded = 0
        header = RecordingHeader(
            format=FORMAT,
            version=VERSION,
            upstream=self.upstream,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            with path.open("x", encoding="utf-8") as out:
                out.write(header.model_dump_json() + "\n")
        except FileExistsError:
            raise BadInput(
                f"--to {path}: the file exists; give a new file (or delete it first)"
            ) from None
        except OSError as exc:
            raise BadInput(f"--to {path}: cannot create it ({exc.strerror})") from None

    # --- secrets --------------------------------------------------------
    def _redactor(self, exchange: Exchange) -> Redactor:
        """The environment's secrets plus the credentials of ``exchange``'s headers."""
        credentials = tuple(
            value for name, value in exchange.headers if name in _CREDENTIAL_HEADERS
        )
        with self._lock:
            redactor = self._redactors.get(credentials)
            if redactor is None:
                environ = dict(os.environ)
                for index, value in enumerate(credentials):
                    # "Bearer sk-…": the token alone is the secret.
                    environ[f"REQUEST_CREDENTIAL_{index}"] = value.split()[-1] if value else ""
                redactor = Redactor.from_environ(environ)
                self._redactors[credentials] = redactor
            return redactor

    # --- relaying -------------------------------------------------------
    def __call__(self, exchange: Exchange) -> RawReply:
        """Relay ``exchange`` upstream; the reply streams back while it arrives."""
        headers = {n: v for n, v in exchange.headers if n not in _NOT_RELAYED}
        headers["accept-encoding"] = "identity"  # the file keeps readable text
        connection: http.client.HTTPConnection
        if self._scheme == "https":
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=_UPSTREAM_TIMEOUT_S
            )
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=_UPSTREAM_TIMEOUT_S
            )
        try:
            connection.request(
                exchange.method, self._prefix + exchange.path, exchange.body or None, headers
            )
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            message = f"grove dev record: cannot reach the upstream {self.upstream}: {exc}"
            log.error(message)
            data = json.dumps(error_body("api_error", message)).encode()
            return RawReply(502, {"content-type": "application/json"}, data)
        kept = {n.lower(): v for n, v in response.getheaders() if n.lower() not in _HOP_BY_HOP}
        kept.pop("content-encoding", None)
        record = exchange.method == "POST" and exchange.path.split("?")[0].rstrip("/") == _MESSAGES
        if "text/event-stream" in kept.get("content-type", ""):
            return RawReply(
                response.status, kept, chunks=self._relay(exchange, response, connection, record)
            )
        try:
            body = response.read()
        finally:
            connection.close()
        if record:
            self._save(exchange, response.status, kept, body)
        return RawReply(response.status, kept, body)

    def _relay(
        self,
        exchange: Exchange,
        response: http.client.HTTPResponse,
        connection: http.client.HTTPConnection,
        record: bool,
    ) -> Iterator[bytes]:
        """Yield the stream's bytes as they come; record the whole once it ended. A stream cut
        short (the upstream dropped it, or the client went away) is not recorded: the CLI
        re-sends the request, and that exchange is."""
        received: list[bytes] = []
        try:
            while True:
                try:
                    chunk = response.read1(65536)
                except (OSError, http.client.HTTPException) as exc:
                    log.warning("the upstream %s cut a stream short: %s", self.upstream, exc)
                    return
                if not chunk:
                    break
                received.append(chunk)
                yield chunk
        finally:
            connection.close()
        if record:
            self._save(exchange, response.status, dict(response.getheaders()), b"".join(received))

    def _save(self, exchange: Exchange, status: int, headers: dict[str, str], body: bytes) -> None:
        """Append the exchange to the file (a request that is not JSON is not recorded)."""
        try:
            parsed: Any = json.loads(exchange.body or b"{}")
        except ValueError:
            return
        if not isinstance(parsed, dict):
            return
        session = dict(exchange.headers).get("x-claude-code-session-id")
        request = ModelRequest.from_body(parsed, session)
        redactor = self._redactor(exchange)
        encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Redacted as well: a body that is not UTF-8 may still echo a key.
            readable = redactor.text(body.decode("utf-8", "surrogateescape"))
            raw = readable.encode("utf-8", "surrogateescape")
            text, encoding = base64.b64encode(raw).decode(), "base64"
        lowered = {n.lower(): v for n, v in headers.items()}
        response = RecordedResponse(
            status=status,
            headers={n: redactor.text(lowered[n]) for n in _KEPT_HEADERS if n in lowered},
            body=redactor.text(text) if encoding == "utf-8" else text,
            encoding=encoding,
        )
        with self._lock:
            number = self._conversations.setdefault(
                request.conversation_key, len(self._conversations) + 1
            )
            entry = RecordedExchange(
                conversation=number,
                role=request.role,
                turn=request.turn_index,
                request=summarize(request, redactor.text),
                response=response,
            )
            with self.path.open("a", encoding="utf-8") as out:
                out.write(entry.model_dump_json() + "\n")
            self.recorded += 1
        log.info("recorded conversation %d turn %d (%s)", number, entry.turn, request.role)
