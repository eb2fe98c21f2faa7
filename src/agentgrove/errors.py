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
    ├── StoreUnavailable            the database cannot be reached or is locked (try again)
    │   └── DiskFull                the database's disk is full (free space, try again)
    └── TransitionLost              a guarded status change matched no row (a race was lost)

Every message names the thing that is wrong and says what to do, on one line.
"""

from __future__ import annotations


class GroveError(Exception):
    """Base of every error agentgrove raises on purpose."""


class BadInput(GroveError):
    """The request is invalid; nothing was written."""


class MissingInputs(BadInput):
    """A workflow was started without its required inputs (``names``); the message says how to
    give them through the Python API, and the CLI rephrases it for ``--input``."""

    def __init__(self, workflow: str, names: list[str]) -> None:
        self.workflow = workflow
        self.names = names
        super().__init__(
            f"{self.lead()}; give inputs={{{', '.join(f'{n!r}: ...' for n in names)}}}"
        )

    def lead(self) -> str:
        plural = "s" if len(self.names) > 1 else ""
        listed = ", ".join(repr(name) for name in self.names)
        return f"missing required input{plural} {listed} for workflow {self.workflow!r}"


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


class StoreUnavailable(GroveError):
    """The database cannot be used right now: the connection dropped or was refused, or
    (SQLite) another process held the write lock past the busy timeout. The transaction may or
    may not have committed; a fenced write may simply be made again. The store raises this in
    place of the driver's error (the cause is ``__cause__``), so callers never have to ask
    whether a SQLAlchemy exception is transient."""

    def __init__(self, cause: BaseException) -> None:
        detail = " ".join(str(getattr(cause, "orig", None) or cause).split())
        super().__init__(f"the database is unavailable ({detail}): try again shortly")


class DiskFull(StoreUnavailable):
    """The database's disk is full (SQLite's "database or disk is full", PostgreSQL's
    ``disk_full``): nothing was written. Transient like any outage: a worker keeps what it owes
    and writes it, fenced, once there is space again (with what the attempt really spent)."""

    def __init__(self, cause: BaseException, where: str) -> None:
        GroveError.__init__(self, f"no space left on device writing {where}: free space and retry")
        self.__cause__ = cause
