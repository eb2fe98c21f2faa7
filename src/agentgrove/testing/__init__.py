"""Scripted Anthropic model server for driving the real Claude Code CLI offline.

Build a :class:`Script` (rules keyed by role / prompt / predicate, or handler
functions; or load a YAML one with :func:`load_script`, the format of
``docs/scripting.md``), serve it with :class:`ModelServer`, and hand
``server.env()`` to the CLI (e.g. ``ClaudeAgentOptions(env=server.env())``).

Record real conversations with a :class:`Recorder` (a ``forward`` handler: the server relays to
an upstream API and saves each exchange) and play them back with a :class:`Replayer` (a script
handler answering by role, conversation and turn, byte for byte).
"""

from agentgrove.testing._demo import (
    DEMO_GREETING,
    demo_script,
    file_writer_script,
    playground_script,
)
from agentgrove.testing._raw import Exchange, Forward, RawReply
from agentgrove.testing._record import Recorder, Recording, load_recording
from agentgrove.testing._replay import Replayer
from agentgrove.testing._request import ModelRequest, ToolCall, strip_system_reminders
from agentgrove.testing._script import Handler, Resolution, Script
from agentgrove.testing._script_file import ScriptError, load_script, parse_script
from agentgrove.testing._server import ModelServer
from agentgrove.testing._turns import (
    Fault,
    Reply,
    Step,
    Turn,
    TurnSpec,
    Usage,
    bash,
    read_file,
    say,
    text,
    tool_use,
    write_file,
)

__all__ = [
    "DEMO_GREETING",
    "Exchange",
    "Fault",
    "Forward",
    "Handler",
    "ModelRequest",
    "ModelServer",
    "RawReply",
    "Recorder",
    "Recording",
    "Replayer",
    "Reply",
    "Resolution",
    "Script",
    "ScriptError",
    "Step",
    "ToolCall",
    "Turn",
    "TurnSpec",
    "Usage",
    "bash",
    "demo_script",
    "file_writer_script",
    "load_recording",
    "load_script",
    "parse_script",
    "playground_script",
    "read_file",
    "say",
    "strip_system_reminders",
    "text",
    "tool_use",
    "write_file",
]
