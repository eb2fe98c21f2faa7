"""Pure mapping from what the CLI reported to an :class:`ErrorKind` (no SDK import here)."""

from __future__ import annotations

from agentgrove.models import ErrorKind

_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
_PERMANENT_ASSISTANT_ERRORS = {"authentication_failed", "billing_error", "invalid_request"}
_TRANSIENT_ASSISTANT_ERRORS = {"rate_limit", "server_error"}


def classify(
    *, subtype: str, api_error_status: int | None, assistant_error: str | None
) -> ErrorKind:
    """The kind of a failed ResultMessage.

    ``subtype`` is the ResultMessage subtype (``error_max_turns``, ``error_max_budget_usd``,
    ``success`` with ``is_error``...), ``api_error_status`` the HTTP status the CLI gave up on,
    ``assistant_error`` the last AssistantMessage's ``error`` field.
    """
    if subtype == "error_max_budget_usd":
        return ErrorKind.BUDGET_EXCEEDED
    if subtype == "error_max_turns":
        return ErrorKind.MAX_TURNS
    if assistant_error in _PERMANENT_ASSISTANT_ERRORS:
        return ErrorKind.PERMANENT
    if api_error_status is not None:
        if api_error_status in _TRANSIENT_STATUS or api_error_status >= 500:
            return ErrorKind.MODEL_ERROR
        return ErrorKind.PERMANENT
    if assistant_error in _TRANSIENT_ASSISTANT_ERRORS or assistant_error == "unknown":
        return ErrorKind.MODEL_ERROR
    return ErrorKind.MODEL_ERROR if subtype == "error_during_execution" else ErrorKind.PERMANENT
