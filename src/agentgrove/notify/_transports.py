"""Where a notification goes: a webhook (a JSON POST) or a command (the JSON on its stdin).

Each transport is one blocking call, made on a thread by the notifier, that returns on
success and raises :class:`DeliveryFailed` (one short reason) otherwise, within about its
``timeout_s``: the webhook's socket operations time out, and the command is killed with
everything it started when its time is up. The network and subprocess libraries are used
here only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from agentgrove.text import one_line

_REASON = 300
"""How much of a receiver's or command's complaint a failure keeps."""


class DeliveryFailed(Exception):
    """A delivery did not succeed; ``str()`` says why, on one line, without the URL's path
    (a Slack webhook's path is its secret)."""


class Transport(Protocol):
    def send(self, body: Mapping[str, Any], notification_id: int) -> None:
        """Deliver ``body``, or raise :class:`DeliveryFailed`."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a 3xx is an answer, not a success: it is reported, never followed


class Webhook:
    """POST the body as JSON; any 2xx is a success. The receiver sees the notification's id
    in ``X-Grove-Notification`` (the same id on every retry), to de-duplicate."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.where = f"webhook {urlsplit(url).hostname}"
        self._opener = urllib.request.build_opener(_NoRedirects())

    def send(self, body: Mapping[str, Any], notification_id: int) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "agentgrove",
                "X-Grove-Notification": str(notification_id),
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            with exc:
                said = one_line(exc.read(2048).decode("utf-8", "replace"), _REASON)
            raise DeliveryFailed(
                f"{self.where} answered HTTP {exc.code}" + (f": {said}" if said else "")
            ) from None
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, bad answer
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryFailed(f"{self.where}: {one_line(str(reason), _REASON)}") from None


class Command:
    """Run ``sh -c command`` in ``cwd`` with the body as JSON on its stdin; exit 0 is a
    success. At ``timeout_s`` it is killed with its whole process group."""

    def __init__(self, command: str, timeout_s: float, cwd: str | None = None) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.cwd = cwd
        self.where = "command"

    def send(self, body: Mapping[str, Any], notification_id: int) -> None:
        env = {**os.environ, "GROVE_NOTIFICATION_ID": str(notification_id)}
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=env,
                start_new_session=True,  # its own group, so a timeout kills what it started
            )
        except OSError as exc:
            raise DeliveryFailed(f"command could not start: {exc.strerror}") from None
        with process:  # its pipes closed, however it ends
            try:
                _, err = process.communicate(json.dumps(body).encode(), timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise DeliveryFailed(f"command timed out after {self.timeout_s:g} s") from None
            finally:
                _kill_group(process)  # on a timeout, and anything it left in the background
        if process.returncode != 0:
            said = one_line(err.decode("utf-8", "replace")[-2048:], _REASON)
            raise DeliveryFailed(
                f"command exited {process.returncode}" + (f": {said}" if said else "")
            )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        process.wait()
