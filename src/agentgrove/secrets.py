"""Keeping secrets out of what grove stores: transcripts, events, outputs, errors.

A :class:`Redactor` knows the values of the environment's secret-looking variables (names with
KEY, TOKEN, SECRET or PASSWORD; values of 8 characters or more) and replaces every occurrence in
strings, however deeply nested, with ``[redacted:NAME]``. Pure apart from reading the mapping
it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_MIN_LENGTH = 8


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(
            ((value, name) for name, value in secrets.items() if len(value) >= _MIN_LENGTH),
            key=lambda pair: -len(pair[0]),
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        return cls({k: v for k, v in environ.items() if _SECRET_NAME.search(k)})

    def text(self, value: str) -> str:
        for secret, name in self._secrets:
            if secret in value:
                value = value.replace(secret, f"[redacted:{name}]")
        return value

    def __call__(self, value: Any) -> Any:
        """``value`` with every secret replaced (strings, lists, tuples and dicts walked)."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value
