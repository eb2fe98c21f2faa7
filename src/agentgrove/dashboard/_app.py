"""The dashboard's FastAPI application: pages, the live event stream, the two actions, and
``/metrics``.

Contracts:

* Every page reads the database (the source of truth: workers usually run in other processes)
  and is a plain ``def`` handler, so FastAPI runs it in a thread and a slow query or a ``git
  diff`` never stalls the event loop that ``grove up`` shares with its worker.
* Read-only unless a token was given: without one the action buttons are not shown and the
  action endpoints answer 403.
* Templates autoescape, so task text, outputs and transcripts are shown, never interpreted.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentgrove import metrics
from agentgrove.dashboard import _actions, _pages, _stream
from agentgrove.errors import BadInput, UnknownAgent
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, elapsed_s
from agentgrove.text import one_line, visible

HERE = Path(__file__).parent


def create_app(grove: Grove, *, token: str | None = None) -> FastAPI:
    """The dashboard for ``grove``; ``token`` enables the cancel and retry actions.

    Sets ``app.state.grove``, ``app.state.token`` and ``app.state.stopping`` (a
    ``threading.Event``: once set, open event streams end, so a server can shut down).
    """
    app = FastAPI(title="agentgrove", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.grove = grove
    app.state.token = token or None
    app.state.stopping = threading.Event()
    app.state.templates = Jinja2Templates(env=_environment())
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(_pages.router)
    app.include_router(_stream.router)
    app.include_router(_actions.router)
    app.include_router(metrics.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    def error_page(request: Request, message: str, status: int) -> Response:
        return app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
            request, "error.html", {"message": message, "status": status}, status_code=status
        )

    @app.exception_handler(BadInput)
    def bad_input(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, UnknownAgent | _pages.NotFound) else 400
        return error_page(request, str(exc), status)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: Exception) -> Response:
        # A mistyped address or a bad query value gets a page like the others, not JSON.
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_page(request, f"nothing at {request.url.path}", 404)
        return error_page(request, str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return error_page(request, f"{where}: {first.get('msg')}", 400)

    return app


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # everything user-controlled is escaped, in HTML and in SVG text
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        money=money,
        duration=duration,
        wall=wall,
        when=when,
        short=short,
        visible=visible,
        percent=percent,
    )
    return env


def money(value: float | None) -> str:
    if not value:
        return "$0"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def duration(ms: int | float | None) -> str:
    """Milliseconds as a short human duration: ``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 10m``."""
    if not ms:
        return "-"
    seconds = ms / 1000
    if seconds < 1:
        return f"{ms:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def wall(agent: AgentRecord) -> str:
    """The agent's wall time (:func:`agentgrove.models.elapsed_s`), as ``ls`` and ``show``
    count it."""
    seconds = elapsed_s(agent, datetime.now(UTC))
    return "-" if seconds is None else duration(seconds * 1000)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def short(value: str | None, limit: int = 90) -> str:
    return one_line(value, limit)


__all__ = ["create_app"]
