"""``grove shell``: an interactive prompt over the ``grove`` commands.

Each line runs through the CLI's own typer app in-process (:class:`Dispatcher`), with Tab
completion of commands, roles, agent and run ids (:class:`GroveCompleter`), history in the
grove home, and a status line with the executing and pending counts and today's spend
(:class:`StatusLine`), and a line for each agent that ends while it is open
(:class:`FinishNotices`). ``grove up`` runs the same :class:`Shell` beside its worker and
dashboard.
"""

from agentgrove.shell._completion import CommandNode, GroveCompleter, candidates, command_tree
from agentgrove.shell._dispatch import SHELL_HELP, Dispatcher, Outcome
from agentgrove.shell._notices import FinishNotices, notice_line
from agentgrove.shell._session import HISTORY_FILE, Shell, build_shell, watch_signals
from agentgrove.shell._status import Status, StatusLine, read_status

__all__ = [
    "HISTORY_FILE",
    "SHELL_HELP",
    "CommandNode",
    "Dispatcher",
    "FinishNotices",
    "GroveCompleter",
    "Outcome",
    "Shell",
    "Status",
    "StatusLine",
    "build_shell",
    "candidates",
    "command_tree",
    "notice_line",
    "read_status",
    "watch_signals",
]
