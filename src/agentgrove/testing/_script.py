"""Script: decides the reply to each request of the scripted model server.

Pure (no I/O) but stateful: a :class:`Script` records which turns it served,
so use one instance per server. All methods are thread-safe.

Resolution of a request:

1. The request's conversation (``ModelRequest.conversation_key``) stays bound
   to the rule that served it first, as long as that rule still matches.
2. Otherwise the first rule that matches and has room (``times``) is bound.
3. The reply is ``rule.turns[request.turn_index]``; a turn entry that is a list
   holds attempts, served in order to repeated requests for that same turn of
   that conversation (the CLI re-sends after an error), the last one repeating.
4. With no matching rule, handlers are asked in registration order.
5. Nothing matched, a turn index past the rule's list, or a step/handler
   returning ``None`` makes the request UNEXPECTED.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from agentgrove.testing._raw import RawReply
from agentgrove.testing._request import ModelRequest
from agentgrove.testing._turns import Fault, Reply, Step, Turn, TurnSpec, describe_step

__all__ = ["Handler", "Resolution", "Script"]

Handler: TypeAlias = Callable[[ModelRequest], TurnSpec | None]
"""Fallback function: returns a turn entry (step or attempts list), or ``None`` = unexpected."""


@dataclass(frozen=True)
class Resolution:
    """Outcome of :meth:`Script.resolve`: a ``reply``, or an ``error`` (unexpected request)."""

    reply: Reply | None
    error: str | None
    label: str


@dataclass
class _Rule:
    name: str
    role: str | None
    agent: str | None
    prompt_contains: str | None
    match: Callable[[ModelRequest], bool] | None
    turns: list[TurnSpec]
    times: int | None
    optional: bool
    conversations: list[str] = field(default_factory=list)
    served: dict[int, set[str]] = field(default_factory=dict)

    def matches(self, request: ModelRequest) -> bool:
        if self.role is not None and request.role != self.role:
            return False
        if self.agent is not None and request.agent_id != self.agent:
            return False
        if self.prompt_contains is not None and self.prompt_contains not in request.prompt:
            return False
        return self.match is None or bool(self.match(request))

    def has_room(self) -> bool:
        return self.times is None or len(self.conversations) < self.times


def _attempts(spec: TurnSpec) -> list[Step]:
    if isinstance(spec, (Turn, Fault, RawReply)) or callable(spec):
        return [spec]
    return list(spec)


class Script:
    """Conversation rules plus fallback handlers; see the module docstring for matching."""

    def __init__(self, handler: Handler | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._handlers: list[Handler] = [] if handler is None else [handler]
        self._bindings: dict[str, int] = {}
        self._attempt_counts: dict[tuple[str, str, int], int] = {}

    @classmethod
    def from_handler(cls, fn: Handler) -> Script:
        """A script that answers every request with ``fn``."""
        return cls(handler=fn)

    def handler(self, fn: Handler) -> Handler:
        """Register a fallback handler (usable as a decorator); returns ``fn``."""
        with self._lock:
            self._handlers.append(fn)
        return fn

    def on(
        self,
        *,
        turns: Sequence[TurnSpec],
        role: str | None = None,
        agent: str | None = None,
        prompt_contains: str | None = None,
        match: Callable[[ModelRequest], bool] | None = None,
        times: int | None = None,
        optional: bool = False,
        name: str | None = None,
    ) -> Script:
        """Add a conversation rule; all given criteria must hold. Returns ``self``.

        ``turns[i]`` answers the request whose history has ``i`` assistant
        messages. ``times`` caps how many conversations the rule serves (later
        ones fall through to later rules; ``None`` = any number, at least one).
        ``optional`` rules are never reported by :meth:`unconsumed`.
        """
        if not turns:
            raise ValueError("a rule needs at least one turn")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        if name is None:
            criteria = [
                f"{key}={value!r}"
                for key, value in (
                    ("role", role),
                    ("agent", agent),
                    ("prompt_contains", prompt_contains),
                )
                if value is not None
            ]
            if match is not None:
                criteria.append(f"match={getattr(match, '__name__', 'callable')}")
            name = ", ".join(criteria) or "any request"
        rule = _Rule(name, role, agent, prompt_contains, match, list(turns), times, optional)
        with self._lock:
            self._rules.append(rule)
        return self

    def _find_rule(self, request: ModelRequest, key: str) -> _Rule | None:
        bound = self._bindings.get(key)
        if bound is not None and self._rules[bound].matches(request):
            return self._rules[bound]
        for index, rule in enumerate(self._rules):
            if rule.has_room() and rule.matches(request):
                rule.conversations.append(key)
                self._bindings[key] = index
                return rule
        return None

    def _next_attempt(self, key: str, owner: str, turn: int) -> int:
        slot = (key, owner, turn)
        count = self._attempt_counts.get(slot, 0)
        self._attempt_counts[slot] = count + 1
        return count

    def resolve(self, request: ModelRequest) -> Resolution:
        """Pick the reply for ``request`` and record it as served (thread-safe)."""
        with self._lock:
            try:
                return self._resolve(request)
            except Exception as exc:  # a user callable blew up: report, don't kill the server
                where = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                return Resolution(None, f"script raised {where} ({request.describe()})", "error")

    def _resolve(self, request: ModelRequest) -> Resolution:
        key = request.conversation_key
        turn = request.turn_index
        rule = self._find_rule(request, key)
        if rule is not None:
            label = f"rule [{rule.name}] turns[{turn}]"
            if turn >= len(rule.turns):
                return Resolution(
                    None,
                    f"rule [{rule.name}] has only {len(rule.turns)} turn(s), "
                    f"got a request for turns[{turn}] ({request.describe()})",
                    label,
                )
            attempts = _attempts(rule.turns[turn])
            number = self._next_attempt(key, f"rule:{id(rule)}", turn)
            step = attempts[min(number, len(attempts) - 1)]
            reply = step(request) if callable(step) else step
            if reply is None:
                return Resolution(
                    None, f"{label}: step returned None ({request.describe()})", label
                )
            if number >= len(attempts) - 1:
                rule.served.setdefault(turn, set()).add(key)
            return Resolution(reply, None, f"{label} attempt {number + 1}")
        for index, handler in enumerate(self._handlers):
            spec = handler(request)
            if spec is None:
                continue
            attempts = _attempts(spec)
            number = self._next_attempt(key, f"handler:{index}", turn)
            step = attempts[min(number, len(attempts) - 1)]
            reply = step(request) if callable(step) else step
            if reply is not None:
                return Resolution(
                    reply, None, f"handler {index} turns[{turn}] attempt {number + 1}"
                )
        return Resolution(None, f"no rule or handler matched ({request.describe()})", "unmatched")

    def unconsumed(self) -> list[str]:
        """Descriptions of non-optional rule turns never (fully) served.

        A turn counts as served once its last attempt was served; a rule with
        ``times=N`` needs each turn served in N conversations.
        """
        out: list[str] = []
        with self._lock:
            for rule in self._rules:
                if rule.optional:
                    continue
                needed = rule.times or 1
                for index, spec in enumerate(rule.turns):
                    got = len(rule.served.get(index, set()))
                    if got >= needed:
                        continue
                    steps = ", ".join(describe_step(s) for s in _attempts(spec))
                    count = f" (served in {got} of {needed} conversations)" if needed > 1 else ""
                    where = f"rule [{rule.name}] turns[{index}] of {len(rule.turns)}"
                    out.append(f"{where}: {steps} never served{count}")
        return out
