"""Persistence. :class:`Store` owns every query; nothing outside this package imports SQLAlchemy."""

from agentgrove.store._store import NewAgent, RunOutcome, Store

__all__ = ["NewAgent", "RunOutcome", "Store"]
