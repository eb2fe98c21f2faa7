"""Leak-proofing: find and remove what runs and crashes leave behind.

:func:`collect` reports (and removes) four kinds of leftovers:

* worktrees of finished agents (``finished_worktrees``; only when asked: ``grove gc``);
* orphaned worktree directories under grove's worktrees directory that no agent row owns (a
  crash between ``git worktree add`` and the row, or a reset database);
* branches of finished agents of this grove whose work is merged: their tip is in the
  checkout's ``HEAD``, or still the base the agent started from (``grove gc`` only; with
  ``force``, unmerged ones too). A ``grove/...`` branch no agent of this database owns is never
  deleted: it may be the user's own, or belong to a grove on another database;
* processes marked with the id of one of this grove's agents that is not executing (a worker
  killed mid-run).

Run result branches (``grove/run/<run-id>``, :mod:`agentgrove.run_branches`) are never taken
for an agent's: ``grove gc`` keeps them and says so; ``--force`` deletes those of finished runs
of this grove in this repository (nothing of the run still moves; ``grove workflow show`` makes
the branch again while git still has the sinks' commits). One of a run this grove does not know
is foreign and never deleted.

Workers run it at start-up without ``finished_worktrees``: they clear orphans and processes and
touch no branch. ``dry_run`` reports what would go and removes nothing. It never touches an
executing agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentgrove.errors import BadInput, UnknownAgent
from agentgrove.models import AgentStatus
from agentgrove.processes import agent_processes, kill_agent_processes
from agentgrove.run_branches import run_id_of
from agentgrove.store import Store
from agentgrove.workspaces import (
    BRANCH_PREFIX,
    Workspaces,
    branch_tips,
    delete_branch,
    is_merged,
)


@dataclass
class CleanupReport:
    finished_worktrees: list[str] = field(default_factory=list)
    orphaned_worktrees: list[str] = field(default_factory=list)
    deleted_branches: list[str] = field(default_factory=list)
    unmerged_branches: list[str] = field(default_factory=list)
    foreign_branches: list[str] = field(default_factory=list)
    run_branches: list[str] = field(default_factory=list)
    deleted_run_branches: list[str] = field(default_factory=list)
    killed_processes: dict[int, str] = field(default_factory=dict)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """One line per kind, the first four always (a count may be 0), then what was kept."""
        remove, delete, kill = (
            ("would remove", "would delete", "would kill")
            if self.dry_run
            else ("removed", "deleted", "killed")
        )
        kept = [
            f"kept {len(self.unmerged_branches)} unmerged branch(es) of finished agents "
            "(`grove gc --force` deletes them)" + _listing(self.unmerged_branches),
            f"kept {len(self.foreign_branches)} branch(es) no agent of this grove owns "
            "(grove never deletes them)" + _listing(self.foreign_branches),
            f"kept {len(self.run_branches)} result branch(es) of workflow runs "
            "(`grove gc --force` deletes those of finished runs)" + _listing(self.run_branches),
            f"{delete} {len(self.deleted_run_branches)} result branch(es) of finished workflow "
            "runs" + _listing(self.deleted_run_branches),
        ]
        optional = (
            self.unmerged_branches,
            self.foreign_branches,
            self.run_branches,
            self.deleted_run_branches,
        )
        return [
            f"{remove} {len(self.finished_worktrees)} worktree(s) of finished agents",
            f"{remove} {len(self.orphaned_worktrees)} orphaned worktree(s)"
            + _listing(self.orphaned_worktrees),
            f"{delete} {len(self.deleted_branches)} merged branch(es) of finished agents"
            + _listing(self.deleted_branches),
            f"{kill} {len(self.killed_processes)} leftover process(es)"
            + _listing([f"{pid} ({agent})" for pid, agent in self.killed_processes.items()]),
        ] + [line for line, items in zip(kept, optional, strict=True) if items]


def _listing(items: list[str]) -> str:
    return f": {', '.join(items)}" if items else ""


def _status(store: Store, agent_id: str) -> AgentStatus | None:
    try:
        return store.get_agent(agent_id).status
    except UnknownAgent:
        return None


def collect(
    store: Store,
    workspaces: Workspaces,
    *,
    finished_worktrees: bool,
    force: bool = False,
    dry_run: bool = False,
) -> CleanupReport:
    """Clean up and report. ``finished_worktrees`` (``grove gc``) also removes finished agents'
    worktrees and deletes their merged branches (``force``: unmerged ones too); start-up clears
    orphans and processes and touches no branch. ``dry_run``: report only.
    Processes marked with an id this store does not know are left alone: they may belong to
    another grove on the same machine."""
    report = CleanupReport(dry_run=dry_run)
    if finished_worktrees:
        for ws, agent_status in store.list_workspaces(state="active"):
            # A database may be shared by groves of other repositories (clones among them):
            # only this repository's worktrees are this gc's to remove.
            if agent_status.finished and _in_repo(ws.repo_path, workspaces.repo):
                if not dry_run:
                    store.save_workspace(workspaces.remove(ws))
                report.finished_worktrees.append(ws.agent_id)
    if workspaces.repo is not None:
        if workspaces.worktrees_dir.is_dir():
            for path in sorted(workspaces.worktrees_dir.iterdir()):
                if path.is_dir() and _status(store, path.name) is None:
                    if not dry_run:
                        workspaces.remove_path(path)
                    report.orphaned_worktrees.append(path.name)
        if finished_worktrees:
            _branches(store, workspaces.repo, report, force=force, dry_run=dry_run)
    for pid, agent_id in agent_processes().items():
        status = _status(store, agent_id)
        if status is not None and status is not AgentStatus.EXECUTING:
            if dry_run:
                report.killed_processes[pid] = agent_id
                continue
            killed = kill_agent_processes(agent_id)
            report.killed_processes.update({p: agent_id for p in killed if p == pid})
    return report


def _in_repo(recorded: str | None, repo: Path | None) -> bool:
    """Whether a workspace recorded at ``recorded`` belongs to the repository ``repo``."""
    if recorded is None or repo is None:
        return False
    return Path(recorded).resolve() == repo.resolve()


def _branches(
    store: Store, repo: Path, report: CleanupReport, *, force: bool, dry_run: bool
) -> None:
    """Sort every ``grove/*`` branch into deleted (a finished agent's, merged or forced),
    unmerged (a finished agent's) and foreign (no agent of this store, or one whose recorded
    branch is another); branches of agents still running are not mentioned."""
    for branch, tip in sorted(branch_tips(repo).items()):
        run_id = run_id_of(branch)
        if run_id is not None:
            _run_branch(store, repo, report, branch, run_id, tip, force=force, dry_run=dry_run)
            continue
        try:
            agent = store.get_agent(branch.removeprefix(BRANCH_PREFIX))
        except UnknownAgent:
            report.foreign_branches.append(branch)
            continue
        ws = agent.workspace
        if ws is None or ws.branch != branch or not _in_repo(ws.repo_path, repo):
            # Another repository's agent (a clone sharing the database) or none: the branch
            # here may hold the user's own commits.
            report.foreign_branches.append(branch)
            continue
        if not agent.status.finished:
            continue
        if not (force or tip == ws.base_ref or is_merged(repo, tip)):
            report.unmerged_branches.append(branch)
            continue
        if not dry_run:
            delete_branch(repo, branch, tip)
        report.deleted_branches.append(branch)


def _run_branch(
    store: Store,
    repo: Path,
    report: CleanupReport,
    branch: str,
    run_id: str,
    tip: str,
    *,
    force: bool,
    dry_run: bool,
) -> None:
    """A run's result branch: foreign when no run of this store has that id or its nodes ran
    in another repository; deleted only with ``force`` once the run is finished, else kept."""
    try:
        run = store.get_run(run_id)
    except BadInput:
        run = None
    if run is None or run.id != run_id:  # get_run also takes a prefix
        report.foreign_branches.append(branch)
        return
    repos = {n.agent.workspace.repo_path for n in run.nodes if n.agent and n.agent.workspace}
    here = any(_in_repo(path, repo) for path in repos)
    if repos and not here:  # a run of another repository sharing the database
        report.foreign_branches.append(branch)
    elif force and here and run.status.finished:
        if not dry_run:
            delete_branch(repo, branch, tip)
        report.deleted_run_branches.append(branch)
    else:
        report.run_branches.append(branch)


__all__ = ["CleanupReport", "collect"]
