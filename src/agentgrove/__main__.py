"""``python -m agentgrove`` is the ``grove`` command."""

from agentgrove.cli import main

main()
