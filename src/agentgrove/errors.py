"""The exceptions agentgrove raises, and what the CLI makes of them.

::

    GroveError                      anything agentgrove refuses or fails to do
    ├── BadInput                    the user asked for something invalid  (CLI exit 2)
    │   ├── UnknownRole             a role name that no configuration defines
    │   ├── UnknownAgent            an agent id that is not in the store
    │   ├── NotInitialised          no grove home here: run `grove init`
    │   ├── ConfigError             grove.toml (or the environment) is invalid
    │   └── BadRef                  a git ref that does not resolve
    ├── ModelUnavailable            the model endpoint refused or could not be reached (exit 2)
    └── TransitionLost              a guarded status change matched no row (a race was lost)

Every message names the thing that is wrong and says what to do, on one line.
"""

from __future__ import annotations


class GroveError(Exception):
    """Base of every error agentgrove raises on purpose."""


class BadInput(GroveError):
    """The request is invalid; nothing was written."""


class UnknownRole(BadInput):
    def __init__(self, role: str, known: list[str]) -> None:
        super().__init__(
            f"unknown role {role!r}: known roles are {', '.join(sorted(known))} "
            "(add one in grove.toml under [roles.NAME])"
        )
        self.role = role


class UnknownAgent(BadInput):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"unknown agent id {agent_id!r}: `grove ls` lists the agents")
        self.agent_id = agent_id


class NotInitialised(BadInput):
    def __init__(self, home: str) -> None:
        super().__init__(
            f"no grove home at {home}: run `grove init` in the repository first "
            "(or set GROVE_HOME / GROVE_DB_URL)"
        )


class ConfigError(BadInput):
    """grove.toml or a GROVE_* variable is invalid."""


class BadRef(BadInput):
    """A git ref (for --base) does not name a commit."""


class ModelUnavailable(GroveError):
    """The model endpoint cannot be used: unreachable, or it refused our credentials."""


class TransitionLost(GroveError):
    """A guarded status transition matched no row: another actor moved the agent first."""
