"""The workflow engine: starts runs, and carries out what the store's continuation decides.

Contracts:

* :meth:`WorkflowEngine.start` validates the workflow and its inputs completely before writing
  anything; then the run and its first ready nodes are inserted in one transaction.
* Every later step (dependents becoming pending, failures propagating, the run's status) happens
  inside the transaction that finished a node (see :mod:`agentgrove.store._runs`), so workers
  anywhere move runs forward; :meth:`reconcile` repeats it for every running run on start-up.
* Each node's agent starts from its dependency's result commit; with several dependencies, the
  first one's commit is the base and the others are merged into the worktree (a conflict fails
  the node, naming the paths).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentgrove.approvals import Approval, check_comment
from agentgrove.budgets import check_budget
from agentgrove.errors import BadInput, UnknownRole
from agentgrove.models import RunRecord
from agentgrove.service import AgentService
from agentgrove.store._core import utcnow
from agentgrove.workflows import find_workflow
from agentgrove.workflows.spec import WorkflowSpec, load_workflow, resolve_inputs


class WorkflowEngine:
    def __init__(self, service: AgentService) -> None:
        self.service = service
        self.store = service.store

    def load(self, source: str | Path | Mapping[str, object] | WorkflowSpec) -> WorkflowSpec:
        """A validated workflow from a file, a built-in's name, YAML text or a mapping."""
        if isinstance(source, WorkflowSpec):
            return load_workflow(source.to_json(), roles=list(self.service.config.roles))
        if isinstance(source, (str, Path)) and not (isinstance(source, str) and "\n" in source):
            source = find_workflow(source)
        return load_workflow(source, roles=list(self.service.config.roles))

    def start(
        self,
        source: str | Path | Mapping[str, object] | WorkflowSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        base: str | None = None,
        budget_usd: float | None = None,
    ) -> RunRecord:
        """Validate, then create the run with its first nodes pending. Nothing is written on
        bad input. ``budget_usd``: hard limit on the run's spend."""
        check_budget(budget_usd)
        spec = self.load(source)
        values = resolve_inputs(spec, inputs or {})
        plan = self._plan(spec)
        base_commit = self.service.workspaces.resolve_base(base)
        run_id = uuid.uuid4().hex[:12]
        self.store.create_run(run_id, spec, plan, values, base_commit, utcnow(), budget_usd)
        self.service.wakeup.notify()
        return self.store.get_run(run_id)

    def _plan(self, spec: WorkflowSpec) -> dict[str, dict[str, Any]]:
        """Each node's model, timeout and attempts, resolved against the roles now."""
        roles = self.service.config.roles
        plan: dict[str, dict[str, Any]] = {}
        for node in spec.nodes:
            role = roles.get(node.role)
            if role is None:
                raise UnknownRole(node.role, list(roles))
            plan[node.key] = {
                "model": node.model or role.model,
                "timeout_s": node.timeout_s or role.timeout_s,
                "max_attempts": node.max_attempts or role.max_attempts,
                "max_budget_usd": role.max_budget_usd,
                "check": role.check,
            }
        return plan

    def reconcile(self) -> list[str]:
        """Move every running run forward (start-up); the run ids looked at."""
        return self.store.reconcile_runs(utcnow())

    def get(self, run_id: str) -> RunRecord:
        return self.store.get_run(run_id)

    def cancel(self, run_id: str) -> list[str]:
        run = self.store.get_run(run_id)
        return self.store.cancel_run(run.id, utcnow())

    def rerun(self, run_id: str, from_node: str) -> list[str]:
        """Run ``from_node`` and everything downstream again, keeping upstream results."""
        run = self.store.get_run(run_id)
        again = self.store.rerun_from(run.id, from_node, utcnow())
        self.service.wakeup.notify()
        return again

    def decide(
        self, run_id: str, node: str, *, approve: bool, by: str, comment: str | None
    ) -> Approval:
        """Approve or reject node ``node`` of run ``run_id`` (a unique prefix will do), held at
        its approval gate, as ``by``. Every input is checked before anything is written; a
        node that does not wait, an unknown run or node, or a rejection without a comment is
        :class:`BadInput` with nothing changed."""
        text = check_comment(comment, approve=approve)
        who = by.strip()
        if not who or len(who) > 200 or "\n" in who:
            raise BadInput(f"who decides must be a name of one line, got {by!r}")
        run = self.store.get_run(run_id)
        decision = self.store.decide_approval(
            run.id, node, approve=approve, by=who, comment=text, now=utcnow()
        )
        self.service.wakeup.notify()
        return decision
