"""Workflows: DAGs of agents described in YAML, and the pure decisions that run them.

* :mod:`~agentgrove.workflows.spec` — the format, :func:`load_workflow` and workflow inputs;
* :mod:`~agentgrove.workflows.templates` — checking and rendering the nodes' task templates;
* :mod:`~agentgrove.workflows.dag` — which nodes are ready, blocked, and how the run stands;
* ``builtin/`` — the workflows that ship with agentgrove (:func:`builtin_templates`).

Nothing here touches the database, a subprocess or the SDK; the engine carries it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agentgrove._lazy import lazy_exports

if TYPE_CHECKING:
    from agentgrove.workflows.dag import (
        NodeState,
        RunStatus,
        blocked_by_failure,
        downstream,
        ready_nodes,
        run_status,
        topological_order,
    )
    from agentgrove.workflows.spec import (
        InputSpec,
        NodeSpec,
        WorkflowError,
        WorkflowSpec,
        load_workflow,
        parse_input_args,
        resolve_inputs,
    )
    from agentgrove.workflows.templates import (
        DepResult,
        TaskTemplateError,
        check_template,
        render_task,
        template_name,
    )

# The names load on first use: the store needs the states of dag alone, and the format (spec)
# builds pydantic models that a command reading no workflow should not pay for (issue 13).
_WHERE: dict[str, str] = {
    "NodeState": "agentgrove.workflows.dag",
    "RunStatus": "agentgrove.workflows.dag",
    "blocked_by_failure": "agentgrove.workflows.dag",
    "downstream": "agentgrove.workflows.dag",
    "ready_nodes": "agentgrove.workflows.dag",
    "run_status": "agentgrove.workflows.dag",
    "topological_order": "agentgrove.workflows.dag",
    "InputSpec": "agentgrove.workflows.spec",
    "NodeSpec": "agentgrove.workflows.spec",
    "WorkflowError": "agentgrove.workflows.spec",
    "WorkflowSpec": "agentgrove.workflows.spec",
    "load_workflow": "agentgrove.workflows.spec",
    "parse_input_args": "agentgrove.workflows.spec",
    "resolve_inputs": "agentgrove.workflows.spec",
    "DepResult": "agentgrove.workflows.templates",
    "TaskTemplateError": "agentgrove.workflows.templates",
    "check_template": "agentgrove.workflows.templates",
    "render_task": "agentgrove.workflows.templates",
    "template_name": "agentgrove.workflows.templates",
}

BUILTIN_DIR = Path(__file__).parent / "builtin"


def builtin_templates() -> dict[str, Path]:
    """The built-in workflows by name (their file's stem), sorted by name."""
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.yaml"))}


def find_workflow(name_or_path: str | Path) -> Path:
    """The workflow file ``name_or_path`` means: an existing file (relative to the working
    directory) first, else the built-in workflow of that name. :class:`WorkflowError` otherwise,
    listing the built-ins."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtins = builtin_templates()
    if isinstance(name_or_path, str) and name_or_path in builtins:
        return builtins[name_or_path]
    from agentgrove.workflows.spec import WorkflowError

    raise WorkflowError(
        f"no workflow {str(name_or_path)!r}: it is not a file, and the built-in workflows are "
        f"{', '.join(builtins)}"
    )


__all__ = [
    "BUILTIN_DIR",
    "DepResult",
    "InputSpec",
    "NodeSpec",
    "NodeState",
    "RunStatus",
    "TaskTemplateError",
    "WorkflowError",
    "WorkflowSpec",
    "blocked_by_failure",
    "builtin_templates",
    "check_template",
    "downstream",
    "find_workflow",
    "load_workflow",
    "parse_input_args",
    "ready_nodes",
    "render_task",
    "resolve_inputs",
    "run_status",
    "template_name",
    "topological_order",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
