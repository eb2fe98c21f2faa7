"""Keeping secrets out of what grove stores: transcripts, events, outputs, errors, tasks.

A :class:`Redactor` replaces, in strings however deeply nested in lists, tuples and dicts:

- the password of every URL (``scheme://user:password@host`` becomes
  ``scheme://user:[redacted]@host``), a long user part standing alone (a token, as in
  ``https://TOKEN@host``) and the values of secret-named query parameters (``password=``,
  ``token=``...): the rest of the URL stays readable;
- every occurrence of a value it was given, as ``[redacted:NAME]``, and of the forms an agent
  gets from it with the usual tools: base64 (standard and URL-safe, padded or not, and the part
  of a longer base64 stream that encodes it, at any of the three alignments; a stream
  ``base64`` wrapped over lines is joined first), hex (either case), reversed, URL-encoded and
  JSON-escaped (``json.dumps`` with and without ``ensure_ascii``);
- the value of a secret-named key anywhere in text: ``password=…``, ``PGPASSWORD=…``,
  ``pwd=``, ``passwd=``, ``secret=``, ``token=``, ``api_key=`` (libpq strings, shell
  assignments), ``password: …`` and ``"api_key": "…"`` (YAML, JSON), and the credentials of
  ``Authorization:`` headers and ``Bearer`` tokens; a placeholder (``$VAR``, ``None``, ``str``,
  ``<…>``) is left alone, so code stays readable.

:meth:`Redactor.from_environ` is given the values of the environment's secret-looking variables
(names with KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL, and PASS or AUTH as a word of the
name) and the password of each URL found in any variable (``GROVE_DB_URL``, ``DATABASE_URL``,
any ``*_URL``), so a password the agent prints on its own is caught too. Values of 8 characters
or more are replaced wherever they occur; shorter ones (4 to 7 characters, not a flag such as
``true``) only as a whole word, since inside other words they would match ordinary text; inside
a URL every password is.

All the values' forms are one precompiled regular expression, built once per environment.

:func:`redact` is the process's redactor, for the current environment. The store applies it to
every text and JSON column it writes (``agentgrove.store._schema``), so no path to storage can
skip it. Pure apart from reading the environment.
"""

from __future__ import annotations

import base64
import json
import os
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = ["REDACTED", "Redactor", "redact"]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|(?:^|_)(?:PASS|AUTH)(?:_|$)",
    re.IGNORECASE,
)
_MIN_LENGTH = 8
"""A value this long is replaced wherever it occurs."""
_MIN_WORD_LENGTH = 4
"""A shorter value is replaced only where it stands as a word."""
_FLAG = re.compile(
    r"true|false|yes|no|none|null|nil|on|off|auto|default|enabled?|disabled?|unset|empty",
    re.IGNORECASE,
)
# A user part alone this long is taken for a token (``https://ghp_…@github.com``), not a name.
_TOKEN_USER_LENGTH = 12

# A URL: its scheme, its authority (up to the first / ? # or blank), and the rest of it.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^\s/?#\"'<>`]*)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|apikey)"
    r"|pass|pwd|key|auth|sig|signature)=)(?P<value>[^&;#\s\"'<>`]+)",
    re.IGNORECASE,
)

# ``name=value`` / ``name: value`` where the name ends in a secret word, anywhere in text. (The
# patterns start with a word, not a look-behind, so that ``re`` skips quickly to candidates.)
_KEY_VALUE = re.compile(
    r"(?P<name>(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?)[\"']?[ \t]*[=:][ \t]*)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s\"'`,;&<>(){}\[\]]+)",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(
    r"(?P<name>authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:bearer|basic|token|digest|bot|negotiate|apikey)[ \t]+)?)"
    r"(?P<value>[^\s\"'`,;]+)"
    r"|(?P<scheme>bearer[ \t]+)(?P<token>[A-Za-z0-9._~+/=-]{8,})",
    re.IGNORECASE,
)
_SECRET_KEY = re.compile(
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?)$",
    re.IGNORECASE,
)
_SECRET_KEY_ENDINGS = frozenset({"ord", "swd", "ase", "pwd", "ret", "ken", "key", "ial", "als"})
# What names a secret without holding one: a variable, a template, a type, a literal.
_PLACEHOLDER = re.compile(
    r"(?:true|false|none|null|nil|undefined|str|bytes|int|bool|optional|any|secretstr"
    r"|\*+|\.\.\.|x+)|[$%<{].*|.*\[redacted.*",
    re.IGNORECASE,
)
_HINTS = ("pass", "pwd", "secret", "token", "key", "authorization", "bearer", "credential")
_DIRECTORY = frozenset({"pwd", "oldpwd"})
"""The shell's current and previous directory (``env`` prints them), not ODBC's ``PWD=``."""

# A line of base64 or hex as ``base64`` (76), ``openssl base64`` (64) and ``xxd -p`` (60) wrap
# them: the first line of a run is at least this wide.
_ENCODED_LINE = re.compile(r"[A-Za-z0-9+/=_-]+\r?")
_WRAP_WIDTH = 16
# Every run of two lines or more has a line after a newline that is encoded characters only.
_WRAP_GATE = re.compile(r"\n[A-Za-z0-9+/=_-]+\r?(?:\n|$)")


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


def _redact_key_value(match: re.Match[str]) -> str:
    if match.groupdict().get("scheme") is not None:
        value, name = match["token"], match["scheme"]
    else:
        value, name = match["value"], match["name"]
    quote_char = value[0] if value[0] in "\"'" and len(value) >= 2 else ""
    inner = value[1:-1] if quote_char else value
    word = re.sub(r"[\"'\s=:]", "", name).lower()
    if (
        not inner
        or _PLACEHOLDER.fullmatch(inner)
        or inner.lower() == word
        or (word in _DIRECTORY and inner.startswith(("/", "~")))
    ):
        return match[0]
    return f"{name}{quote_char}{REDACTED}{quote_char}"


def _pairs(value: str, lowered: str) -> str:
    """``value`` with the values of secret-named keys and the credentials of authorization
    headers replaced. The patterns are tried only where a secret word is (found with ``find``,
    far quicker than searching with the patterns): they start at most 8 characters before it
    (``private_key``)."""
    if not any(map(lowered.__contains__, _HINTS)):
        return value
    if len(lowered) != len(value):  # a character whose lowercase is longer: the slow way
        value = _AUTHORIZATION.sub(_redact_key_value, value)
        return _KEY_VALUE.sub(_redact_key_value, value)
    found: list[tuple[int, int, str]] = []
    for hint in _HINTS:
        i = lowered.find(hint)
        while i != -1:
            for start in range(max(0, i - 8), i + 1):
                match = _AUTHORIZATION.match(value, start) or _KEY_VALUE.match(value, start)
                if match:
                    found.append((match.start(), match.end(), _redact_key_value(match)))
                    break
            i = lowered.find(hint, i + 1)
    if not found:
        return value
    out: list[str] = []
    last = 0
    for start, end, shown in sorted(found):
        if start >= last:
            out += [value[last:start], shown]
            last = end
    return "".join([*out, value[last:]])


def _base64_forms(raw: bytes) -> Iterator[str]:
    """``raw`` in base64, standard and URL-safe: whole (padded or not, and with the newline
    ``echo`` adds), and the characters that encode only ``raw``'s bits when it starts at each of
    the three alignments of a longer stream."""
    forms = [
        base64.b64encode(raw).decode(),
        base64.b64encode(raw + b"\n").decode(),
    ]
    for offset in range(3):
        stream = base64.b64encode(b"\0" * offset + raw + b"\0\0").decode()
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        forms.append(stream[start:end])
    for form in forms:
        for text in (form, form.translate(_URLSAFE)):
            yield text
            yield text.rstrip("=")


_URLSAFE = str.maketrans("+/", "-_")


def _forms(secret: str, whole: bool) -> set[str]:
    """What an agent gets from ``secret`` with the usual encoders; ``whole`` leaves out the
    partial base64 (for values matched only as words)."""
    raw = secret.encode()
    quoted = quote(secret, safe="")
    forms = {
        secret,
        secret[::-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        raw.hex(),
        raw.hex().upper(),
        quoted,
        re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quoted),
        quote(secret),
        quote_plus(secret),
    }
    if whole:
        forms.update(_base64_forms(raw))
    else:
        b64 = base64.b64encode(raw).decode()
        forms.update({b64, b64.rstrip("="), b64.translate(_URLSAFE), b64.translate(_URLSAFE)})
    return {form for form in forms if form}


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Each form of each value, and the name it is shown as; longest value first, so a
        # secret containing another is replaced whole.
        names: dict[str, str] = {}
        self._words: set[str] = set()
        for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
            shown = f"[redacted:{name.split('#', 1)[0]}]"
            if len(value) >= _MIN_LENGTH:
                for form in _forms(value, whole=True):
                    if len(form) >= _MIN_LENGTH:
                        names.setdefault(form, shown)
            elif len(value) >= _MIN_WORD_LENGTH and value.strip() and not _FLAG.fullmatch(value):
                for form in _forms(value, whole=False):
                    names.setdefault(form, shown)
                    self._words.add(form)
        self._names = names
        # Most text holds no secret, and ``in`` is far quicker than a large pattern: text is
        # first searched, lowercased, for the forms that contain no other one (a hit may be
        # false), and only the forms a hit stands for go into a pattern (one per set, kept).
        self._probes: dict[str, list[str]] = {}
        for form in sorted(names, key=len):
            lowered = form.lower()
            probe = next((probe for probe in self._probes if probe in lowered), lowered)
            self._probes.setdefault(probe, []).append(form)
        # Shortest first: a text is only searched for the probes no longer than it.
        self._probe_list = tuple(self._probes)
        self._probe_lengths = [len(probe) for probe in self._probe_list]
        self._patterns: dict[frozenset[str], re.Pattern[str]] = {}

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

    def _name(self, match: re.Match[str]) -> str:
        return self._names[match[0]]

    def _values(self, value: str, lowered: str) -> str:
        """``value`` with the known values' forms replaced."""
        fitting = self._probe_list[: bisect_right(self._probe_lengths, len(lowered))]
        if not any(map(lowered.__contains__, fitting)):
            return value
        forms = frozenset(
            form for probe, found in self._probes.items() if probe in lowered for form in found
        )
        pattern = self._patterns.get(forms)
        if pattern is None:
            if len(self._patterns) >= 256:
                self._patterns.clear()
            pattern = self._patterns[forms] = re.compile(
                "|".join(
                    rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])"
                    if form in self._words
                    else re.escape(form)
                    for form in sorted(forms, key=len, reverse=True)
                )
            )
        return pattern.sub(self._name, value)

    def _wrapped(self, value: str) -> str:
        """``value`` with the known values' forms replaced in base64 or hex wrapped over lines
        (``base64``, ``xxd -p``): runs of such lines are joined and replaced as one line."""
        lines = value.split("\n")
        out: list[str] = []
        i = 0
        while i < len(lines):
            j = i
            while j < len(lines) and _ENCODED_LINE.fullmatch(lines[j]):
                j += 1
            if j - i >= 2 and len(lines[i]) >= _WRAP_WIDTH:
                joined = "".join(line.rstrip("\r") for line in lines[i:j])
                redacted = self._values(joined, joined.lower())
                if redacted != joined:
                    out.append(redacted)
                    i = j
                    continue
            out.append(lines[i])
            i += 1
        return "\n".join(out)

    def text(self, value: str) -> str:
        if len(value) < _MIN_WORD_LENGTH:
            return value
        if "://" in value:
            value = _URL.sub(_redact_url, value)
            if "=" in value:
                value = _SECRET_PARAM.sub(rf"\g<name>{REDACTED}", value)
        lowered = value.lower()
        if self._probes:
            redacted = self._values(value, lowered)
            if "\n" in redacted and _WRAP_GATE.search(redacted):
                redacted = self._wrapped(redacted)
            if redacted is not value:
                value, lowered = redacted, redacted.lower()
        return _pairs(value, lowered)

    def _item(self, key: Any, value: Any) -> Any:
        """A dict's ``value`` redacted, and replaced whole when its ``key`` names a secret
        (``{"api_key": "…"}``)."""
        if (
            isinstance(key, str)
            and isinstance(value, str)
            and key[-3:].lower() in _SECRET_KEY_ENDINGS
            and _SECRET_KEY.search(key)
            and value
            and not _PLACEHOLDER.fullmatch(value)
            and not (key.lower() in _DIRECTORY and value.startswith(("/", "~")))
        ):
            return REDACTED
        return self(value)

    def __call__(self, value: Any) -> Any:
        """``value`` with every secret replaced (strings, lists, tuples and dicts walked; dict
        keys too, and a dict's value whole when its key names a secret)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k): self._item(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value


class _ForEnvironment:
    """The redactor of the environment as it is now, rebuilt only when it changed."""

    def __init__(self) -> None:
        self._environ: Mapping[Any, Any] | None = None
        self._redactor = Redactor({})

    def __call__(self, value: Any) -> Any:
        # os.environ's raw data compares without decoding every variable (a copy of the decoded
        # environment cost more than the redaction itself).
        raw: Mapping[Any, Any] = getattr(os.environ, "_data", os.environ)
        if raw != self._environ:
            self._environ = dict(raw)
            self._redactor = Redactor.from_environ(dict(os.environ))
        return self._redactor(value)


redact = _ForEnvironment()
"""``value`` redacted for this process's current environment."""
