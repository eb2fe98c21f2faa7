"""Text that grove shows to people but did not write itself: agents' tasks, outputs, errors and
tool calls, role and workflow names, node keys, paths.

Such text is shown as plain text on every surface, never obeyed: terminal control characters
are made visible (an ESC becomes the four characters ``\\x1b``, so no colour, hyperlink, title or
clipboard sequence reaches the terminal), and rich never reads it as markup or emoji codes.

- :func:`visible` makes the control characters visible (C0 but newline and tab, DEL, C1, and the
  invisible bidirectional, zero-width and tag format characters that reorder or hide text);
- :func:`plain` is a ``rich.text.Text`` of it, for tables, trees and ``console.print``
  (a ``Text`` is never parsed as markup nor for emoji codes);
- :func:`markup` escapes it for a place inside grove's own markup string;
- :func:`one_line` shortens it to one line, made visible too;
- :func:`tool_input` shows a tool call's input as ``key=value`` on one line, each value as
  written (a JSON dump would double every backslash and quote every string).

The terminal console is made with ``emoji=False`` (``agentgrove.cli._app``): grove's own strings
use no emoji codes, so none can come from elsewhere either.
"""

from __future__ import annotations

import json
import re

from rich.markup import escape
from rich.text import Text

__all__ = ["markup", "one_line", "plain", "tool_input", "visible"]

# C0 (tab and newline aside), DEL, C1; the Arabic letter mark; bidirectional embeddings,
# overrides and isolates; zero-width characters and marks; the line and paragraph separators;
# the byte-order mark; the tag characters (invisible, yet they spell ASCII a model reads).
_FORMAT = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\U000e0000-\U000e007f"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_FORMAT}]")
_CONTROL_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_FORMAT}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _show(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object, *, newlines: bool = True) -> str:
    """``text`` (``str()`` of it; ``None`` is empty) with every control character written out
    as an escape (``\\x1b``, ``\\r``, ``\\u202e``, ``\\U000e0041``). Tabs stay, and newlines unless
    ``newlines=False`` (then ``\\n``, as for a table cell or one line of a log)."""
    value = "" if text is None else str(text)
    return (_CONTROL if newlines else _CONTROL_ONE_LINE).sub(_show, value)


def plain(text: object, style: str = "", *, newlines: bool = True) -> Text:
    """``text`` as a rich ``Text``: shown as written, control characters visible."""
    return Text(visible(text, newlines=newlines), style=style)


def markup(text: object) -> str:
    """``text`` made visible and escaped, to put inside one of grove's markup strings."""
    return escape(visible(text))


def one_line(text: str | None, limit: int) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, control
    characters visible, cut to at most ``limit`` characters with a trailing ``…`` when longer;
    ``None`` is empty."""
    flat = visible(" ".join((text or "").split()), newlines=False)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def tool_input(value: object) -> str:
    """A tool call's input on one line: ``file_path=a.txt content=one\\ntwo``. ``value`` is the
    input object or its JSON text (events store it as JSON, cut at 300 characters: text that is
    not a whole JSON object is shown as it is). String values are shown as written, control
    characters (newlines and tabs too) visible; other values as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return visible(value, newlines=False)
    if not isinstance(value, dict):
        return visible(value if isinstance(value, str) else json.dumps(value), newlines=False)
    parts = [
        f"{key}={item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)}"
        for key, item in value.items()
    ]
    return visible(" ".join(parts), newlines=False)
