"""Keeping secrets out of what grove stores: transcripts, events, outputs, errors, tasks.

A :class:`Redactor` replaces, in strings however deeply nested in lists, tuples and dicts:

- the password of every URL (``scheme://user:password@host`` becomes
  ``scheme://user:[redacted]@host``), a long user part standing alone (a token, as in
  ``https://TOKEN@host``) and the values of secret-named query parameters (``password=``,
  ``token=``...): the rest of the URL stays readable;
- every occurrence of a value it was given, as ``[redacted:NAME]``.

:meth:`Redactor.from_environ` is given the values of the environment's secret-looking variables
(names with KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL, and PASS or AUTH as a word of the
name) and the password of each URL found in any variable (``GROVE_DB_URL``, ``DATABASE_URL``,
any ``*_URL``), so a password the agent prints on its own is caught too. Bare values shorter than
8 characters are not replaced (they would match ordinary text); inside a URL every password is.

:func:`redact` is the process's redactor, for the current environment. The store applies it to
every text and JSON column it writes (``agentgrove.store._schema``), so no path to storage can
skip it. Pure apart from reading the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["REDACTED", "Redactor", "redact"]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|(?:^|_)(?:PASS|AUTH)(?:_|$)",
    re.IGNORECASE,
)
_MIN_LENGTH = 8
# A user part alone this long is taken for a token (``https://ghp_…@github.com``), not a name.
_TOKEN_USER_LENGTH = 12

# A URL: its scheme, its authority (up to the first / ? # or blank), and the rest of it.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^\s/?#\"'<>`]*)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|apikey)"
    r"|pass|pwd|key|auth|sig|signature)=)(?P<value>[^&;#\s\"'<>`]+)",
    re.IGNORECASE,
)


def _userinfo(authority: str) -> tuple[str, str] | None:
    """``(user, password)`` of a URL's authority; the password is ``""`` without one."""
    if "@" not in authority:
        return None
    userinfo = authority.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    return user, password


def _redact_url(match: re.Match[str]) -> str:
    scheme, authority = match["scheme"], match["authority"]
    parts = _userinfo(authority)
    if parts is None:
        return match[0]
    user, password = parts
    host = authority.rsplit("@", 1)[1]
    if password:
        return f"{scheme}{user}:{REDACTED}@{host}"
    if len(user) >= _TOKEN_USER_LENGTH:
        return f"{scheme}{REDACTED}@{host}"
    return match[0]


def url_secrets(value: str) -> list[str]:
    """The passwords (and token-like user parts) of the URLs in ``value``, as written and
    percent-decoded."""
    found: list[str] = []
    for match in _URL.finditer(value):
        parts = _userinfo(match["authority"])
        if parts is None:
            continue
        user, password = parts
        secret = password or (user if len(user) >= _TOKEN_USER_LENGTH else "")
        if secret:
            found += [secret, unquote(secret)]
    return found


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(
            ((value, name) for name, value in secrets.items() if len(value) >= _MIN_LENGTH),
            key=lambda pair: -len(pair[0]),
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        secrets: dict[str, str] = {}
        for name, value in environ.items():
            for i, secret in enumerate(url_secrets(value)):
                secrets.setdefault(f"{name}#{i}", secret)
            if _SECRET_NAME.search(name):
                secrets[name] = value
        # Several passwords of one variable are all named after it.
        return cls(secrets)

    def text(self, value: str) -> str:
        if "://" in value:
            value = _URL.sub(_redact_url, value)
            if "=" in value:
                value = _SECRET_PARAM.sub(rf"\g<name>{REDACTED}", value)
        for secret, name in self._secrets:
            if secret in value:
                value = value.replace(secret, f"[redacted:{name.split('#', 1)[0]}]")
        return value

    def __call__(self, value: Any) -> Any:
        """``value`` with every secret replaced (strings, lists, tuples and dicts walked; dict
        keys too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value


class _ForEnvironment:
    """The redactor of the environment as it is now, rebuilt only when it changed."""

    def __init__(self) -> None:
        self._environ: dict[str, str] | None = None
        self._redactor = Redactor({})

    def __call__(self, value: Any) -> Any:
        environ = dict(os.environ)
        if environ != self._environ:
            self._environ, self._redactor = environ, Redactor.from_environ(environ)
        return self._redactor(value)


redact = _ForEnvironment()
"""``value`` redacted for this process's current environment."""
