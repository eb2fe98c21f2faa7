"""Leak-proofing: find and remove what runs and crashes leave behind.

:func:`collect` reports (and removes) four kinds of leftovers:

* worktrees of finished agents (``finished_worktrees``; only when asked: ``grove gc``);
* orphaned worktree directories that no agent row owns (a crash between ``git worktree add``
  and the row, or a reset database);
* stale ``grove/<id>`` branches whose agent no longer exists (branches of known agents stay:
  they are the agents' results);
* processes marked with the id of one of this grove's agents that is not executing (a worker
  killed mid-run).

Workers run it at start-up without ``finished_worktrees``: they report stale branches but
delete none, because a branch holds an agent's committed work, and a worker started against
another database (``GROVE_DB_URL``) would take every branch of this grove for stale; ``grove
gc``, which a person runs, deletes them. It never touches an executing agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentgrove.errors import UnknownAgent
from agentgrove.models import AgentStatus
from agentgrove.processes import agent_processes, kill_agent_processes
from agentgrove.store import Store
from agentgrove.workspaces import BRANCH_PREFIX, Workspaces, delete_branch, list_branches


@dataclass
class CleanupReport:
    finished_worktrees: list[str] = field(default_factory=list)
    orphaned_worktrees: list[str] = field(default_factory=list)
    stale_branches: list[str] = field(default_factory=list)
    stale_branches_kept: list[str] = field(default_factory=list)
    killed_processes: dict[int, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"removed {len(self.finished_worktrees)} worktree(s) of finished agents",
            f"removed {len(self.orphaned_worktrees)} orphaned worktree(s)"
            + _listing(self.orphaned_worktrees),
            f"deleted {len(self.stale_branches)} stale branch(es)" + _listing(self.stale_branches),
            f"killed {len(self.killed_processes)} leftover process(es)"
            + _listing([f"{pid} ({agent})" for pid, agent in self.killed_processes.items()]),
        ] + (
            [
                f"kept {len(self.stale_branches_kept)} stale branch(es) (`grove gc` deletes "
                "them)" + _listing(self.stale_branches_kept)
            ]
            if self.stale_branches_kept
            else []
        )


def _listing(items: list[str]) -> str:
    return f": {', '.join(items)}" if items else ""


def _status(store: Store, agent_id: str) -> AgentStatus | None:
    try:
        return store.get_agent(agent_id).status
    except UnknownAgent:
        return None


def collect(store: Store, workspaces: Workspaces, *, finished_worktrees: bool) -> CleanupReport:
    """Clean up and report. ``finished_worktrees`` (``grove gc``) also removes finished agents'
    worktrees and deletes stale branches; start-up clears orphans and processes and only
    reports stale branches.
    Processes marked with an id this store does not know are left alone: they may belong to
    another grove on the same machine."""
    report = CleanupReport()
    if finished_worktrees:
        for ws, agent_status in store.list_workspaces(state="active"):
            if agent_status.finished and ws.repo_path is not None:
                store.save_workspace(workspaces.remove(ws))
                report.finished_worktrees.append(ws.agent_id)
    if workspaces.repo is not None:
        if workspaces.worktrees_dir.is_dir():
            for path in sorted(workspaces.worktrees_dir.iterdir()):
                if path.is_dir() and _status(store, path.name) is None:
                    workspaces.remove_path(path)
                    report.orphaned_worktrees.append(path.name)
        for line in list_branches(workspaces.repo):
            branch = line.split()[0]
            agent_id = branch.removeprefix(BRANCH_PREFIX)
            if _status(store, agent_id) is not None:
                continue
            if finished_worktrees:
                delete_branch(workspaces.repo, branch)
                report.stale_branches.append(branch)
            else:
                report.stale_branches_kept.append(branch)
    for pid, agent_id in agent_processes().items():
        status = _status(store, agent_id)
        if status is not None and status is not AgentStatus.EXECUTING:
            killed = kill_agent_processes(agent_id)
            report.killed_processes.update({p: agent_id for p in killed if p == pid})
    return report


__all__ = ["CleanupReport", "collect"]
