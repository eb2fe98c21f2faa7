"""Preflight of the model endpoint, so that `grove run` can refuse before writing anything."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping

from agentgrove.errors import ModelUnavailable

DEFAULT_BASE_URL = "https://api.anthropic.com"

# Always given to the CLI: no telemetry or update checks, and MCP tools offered directly
# (otherwise they hide behind a tool-search tool).
CLI_ENV_DEFAULTS: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "ENABLE_TOOL_SEARCH": "false",
}


def check_endpoint(env: Mapping[str, str] | None = None, *, timeout_s: float = 5.0) -> str:
    """Raise :class:`ModelUnavailable` unless the endpoint answers and accepts the key.

    Asks ``GET /v1/models`` (cheap, no tokens). Any answer other than a refused connection, 401
    or 403 counts as usable. Returns the base URL checked.
    """
    source = env if env is not None else os.environ
    base = source.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
    key = source.get("ANTHROPIC_API_KEY") or source.get("ANTHROPIC_AUTH_TOKEN")
    if not key:
        raise ModelUnavailable(
            "ANTHROPIC_API_KEY is not set: export it (or run `grove demo`, which needs none)"
        )
    request = urllib.request.Request(
        base.rstrip("/") + "/v1/models",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ModelUnavailable(
                f"the model endpoint {base} refused the API key (HTTP {exc.code}): "
                "set ANTHROPIC_API_KEY to a valid key"
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelUnavailable(
            f"the model endpoint {base} is unreachable ({reason}): start it or fix "
            "ANTHROPIC_BASE_URL"
        ) from None
    return base
