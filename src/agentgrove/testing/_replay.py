"""Replaying a recording offline: a :class:`Script` handler that answers each request with the
recorded response of the same role, conversation and turn, byte for byte.

Matching (thread-safe):

1. A conversation seen for the first time (``ModelRequest.conversation_key``) is bound to a
   recorded conversation with the same role and the same task (``RequestSummary.task``: the
   prompt, normalized as in ``_record.summarize``): the one bound least often so far, in
   recording order (parallel agents with one task get the recorded ones in turn; running the
   agents again starts over).
2. A request for turn ``t`` of a bound conversation gets the recorded exchanges of that turn in
   order (the CLI re-sends a turn after an error: the recorded error, then the recorded retry);
   asked again past the last, the last repeats.
3. Before it is answered, the request's summary must equal the recorded one in what matters:
   ``stream`` and the new content of its last user message, block for block (each
   ``tool_result``'s text and ``is_error`` flag, each user text), normalized and redacted alike
   (a redacted span of the recording stands for any text: the recorder may have known a secret,
   such as the recorded agent's key, that the replaying server does not).
   Not compared: the system prompt, the tool list, the model, metadata, and the earlier history
   (the recorded replies themselves, and contents compared at earlier turns).

Anything else DIVERGES: no recorded conversation for the role and task, no recorded turn, or
content that differs. A divergence is answered with HTTP 400 whose message names it and
``--replay`` (so the agent fails saying why), kept in :attr:`Replayer.divergences` and passed
to ``on_divergence`` (the CLI prints it on stderr), each distinct one once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentgrove.secrets import redact
from agentgrove.testing._raw import RawReply
from agentgrove.testing._record import (
    RecordedExchange,
    Recording,
    RequestSummary,
    SummaryBlock,
    load_recording,
    summarize,
)
from agentgrove.testing._request import ModelRequest
from agentgrove.testing._script import Script
from agentgrove.testing._server import ModelServer
from agentgrove.testing._turns import Fault

__all__ = ["Replayer", "replay_server"]

_SHOWN = 60
_REDACTED_SPAN = re.compile(r"\[redacted(?::[^\]\s]*)?\]")


def _short(text: str) -> str:
    flat = text.replace("\n", "\\n")
    return repr(flat if len(flat) <= _SHOWN else flat[: _SHOWN - 1] + "…")


@dataclass
class _Conversation:
    number: int
    role: str | None
    task: str
    turns: dict[int, list[RecordedExchange]] = field(default_factory=dict)

    def describe(self) -> str:
        return f"recorded conversation {self.number} (role {self.role!r}, task {_short(self.task)})"


def _redact_text(value: str) -> str:
    return str(redact(value))


def _block(block: SummaryBlock) -> str:
    if block.type == "text":
        return f"text {_short(block.text)}"
    flag = " (is_error)" if block.is_error else ""
    return f"tool_result {_short(block.text)}{flag}"


def _same_text(live: str, recorded: str) -> bool:
    """``live`` equals ``recorded``, where a redacted span of the recording stands for any
    text (the recorder redacted a secret the replaying server cannot know, e.g. the key of the
    recorded agent's headers)."""
    if live == recorded:
        return True
    if "[redacted" not in recorded:
        return False
    parts = _REDACTED_SPAN.split(recorded)
    pattern = "(?:.*?)".join(re.escape(part) for part in parts)
    return re.fullmatch(pattern, live, re.DOTALL) is not None


def _same_block(live: SummaryBlock, recorded: SummaryBlock) -> bool:
    return (
        live.type == recorded.type
        and live.is_error == recorded.is_error
        and _same_text(live.text, recorded.text)
    )


def _difference(live: RequestSummary, recorded: RequestSummary) -> str | None:
    """What differs in what replay compares, or ``None``."""
    if live.stream != recorded.stream:
        return f"stream={live.stream} where the recording has stream={recorded.stream}"
    if len(live.content) != len(recorded.content):
        return (
            f"the last user message has {len(live.content)} block(s) "
            f"[{', '.join(map(_block, live.content))}] where the recording has "
            f"{len(recorded.content)} [{', '.join(map(_block, recorded.content))}]"
        )
    for index, (got, want) in enumerate(zip(live.content, recorded.content, strict=True), 1):
        if not _same_block(got, want):
            return f"block {index} is {_block(got)} where the recording has {_block(want)}"
    return None


class Replayer:
    """The replaying handler for ``Script.from_handler``; see the module docstring."""

    def __init__(
        self, recording: Recording, on_divergence: Callable[[str], None] | None = None
    ) -> None:
        self.recording = recording
        self.on_divergence = on_divergence
        self._lock = threading.Lock()
        self._conversations: dict[int, _Conversation] = {}
        for exchange in recording.exchanges:
            conversation = self._conversations.setdefault(
                exchange.conversation,
                _Conversation(exchange.conversation, exchange.role, exchange.request.task),
            )
            conversation.turns.setdefault(exchange.turn, []).append(exchange)
        self._bindings: dict[str, _Conversation] = {}
        self._attempts: dict[tuple[str, int], int] = {}
        self.divergences: list[str] = []
        self.replayed = 0

    def __call__(self, request: ModelRequest) -> RawReply | Fault:
        """The recorded reply to ``request``, or a 400 naming its divergence."""
        summary = summarize(request, _redact_text)
        with self._lock:
            reply = self._reply(request, summary)
            if isinstance(reply, RawReply):
                self.replayed += 1
                return reply
            message = (
                f"grove dev model-server --replay {self.recording.path}: the request diverges "
                f"from the recording: {reply}"
            )
            new = message not in self.divergences  # the CLI re-sends a refused request
            if new:
                self.divergences.append(message)
        if new and self.on_divergence is not None:
            self.on_divergence(message)
        return Fault.status(400, message=message)

    def _bind(self, request: ModelRequest, summary: RequestSummary) -> _Conversation | str:
        key = request.conversation_key
        bound = self._bindings.get(key)
        if bound is not None:
            return bound
        fitting = [
            conversation
            for conversation in self._conversations.values()
            if conversation.role == request.role and _same_text(summary.task, conversation.task)
        ]
        if not fitting:
            recorded = "; ".join(c.describe() for c in self._conversations.values()) or "none"
            return (
                f"no recorded conversation of role {request.role!r} has the task "
                f"{_short(summary.task)} (the recording has: {recorded})"
            )
        # The least replayed so far, in recording order: parallel agents with one task get the
        # recorded ones in turn, and a second run starts over.
        uses = [sum(1 for c in self._bindings.values() if c is f) for f in fitting]
        conversation = fitting[uses.index(min(uses))]
        self._bindings[key] = conversation
        return conversation

    def _reply(self, request: ModelRequest, summary: RequestSummary) -> RawReply | str:
        conversation = self._bind(request, summary)
        if isinstance(conversation, str):
            return conversation
        turn = request.turn_index
        exchanges = conversation.turns.get(turn)
        if not exchanges:
            turns = ", ".join(str(t) for t in sorted(conversation.turns))
            return (
                f"{conversation.describe()} has no turn {turn} (it has turns {turns}): "
                "the agent went on where the recorded one had stopped"
            )
        slot = (request.conversation_key, turn)
        attempt = self._attempts.get(slot, 0)
        self._attempts[slot] = attempt + 1
        exchange = exchanges[min(attempt, len(exchanges) - 1)]
        difference = _difference(summary, exchange.request)
        if difference is not None:
            return f"turn {turn} of {conversation.describe()}: {difference}"
        response = exchange.response
        return RawReply(response.status, dict(response.headers), response.body_bytes())

    def report(self) -> tuple[list[str], int]:
        """What to say when the server stops, and its exit code: a summary line (with the
        number of divergences, each already said) and the recorded turns never asked for; 1 if
        any request diverged, else 0."""
        unreplayed = self.unreplayed()
        with self._lock:
            replayed, diverged = self.replayed, len(self.divergences)
        summary = f"replayed {replayed} request(s) from {self.recording.path}"
        if diverged:
            summary += f", {diverged} divergence(s)"
        return [*unreplayed, summary], 1 if diverged else 0

    def unreplayed(self) -> list[str]:
        """Each recorded turn never asked for."""
        with self._lock:
            asked = {
                (id(conversation), turn)
                for key, conversation in self._bindings.items()
                for (other, turn) in self._attempts
                if other == key
            }
            return [
                f"{conversation.describe()} turn {turn} never replayed"
                for conversation in self._conversations.values()
                for turn in sorted(conversation.turns)
                if (id(conversation), turn) not in asked
            ]


def replay_server(
    path: Path, port: int, say: Callable[[str], None]
) -> tuple[ModelServer, Replayer]:
    """A (not yet started) :class:`ModelServer` replaying the recording at ``path``, and its
    :class:`Replayer`; ``say`` is told what it replays, then each divergence. :class:`BadInput`
    if the file is missing or bad."""
    recording = load_recording(path)
    replayer = Replayer(recording, on_divergence=say)
    conversations = len({e.conversation for e in recording.exchanges})
    say(
        f"replaying {path}: {conversations} conversation(s), "
        f"{len(recording.exchanges)} request(s) recorded from {recording.header.upstream}"
    )
    return ModelServer(Script.from_handler(replayer), port=port), replayer
