"""Persistence. :class:`Store` owns every query; nothing outside this package imports SQLAlchemy."""

from agentgrove.store._records import NewAgent, RunOutcome
from agentgrove.store._store import Store

__all__ = ["NewAgent", "RunOutcome", "Store"]
