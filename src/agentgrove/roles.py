"""Roles are data: what an agent of each kind is told, which model and tools it gets, its limits.

The built-in roles below can be overridden field by field, and new roles added, in the
``[roles.NAME]`` tables of a project's ``grove.toml`` (see :mod:`agentgrove.config`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentgrove.models import unstorable

SONNET = "claude-sonnet-4-5"
HAIKU = "claude-haiku-4-5"

_EDIT_TOOLS = ["Read", "Write", "Edit", "Glob", "Grep", "Bash"]
_READ_TOOLS = ["Read", "Glob", "Grep", "Bash"]


BashLevel = Literal["full", "read-only", "none"]


class Role(BaseModel):
    """One kind of agent. Immutable; ``grove.toml`` values are validated into it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    description: str
    model: str
    system_prompt: str
    tools: tuple[str, ...] = Field(min_length=1)
    max_turns: int = Field(default=30, ge=1, le=1000)
    max_budget_usd: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    """Wall time of one attempt, counted from its claim (the worktree's preparation and any
    ``[workspace] setup`` included); the CLI gets what is left of it."""
    max_attempts: int = Field(default=3, ge=1, le=20)
    bash: BashLevel = "full"
    """What the role may run with Bash (see :mod:`agentgrove.runtime._policy`)."""
    max_children: int = Field(default=8, ge=0, le=1000)
    """Fan-out: how many children one agent of this role may spawn."""
    max_depth: int = Field(default=3, ge=0, le=50)
    """An agent of this role at this depth (root = 0) or deeper may not spawn children."""
    may_spawn: tuple[str, ...] | None = None
    """The roles an agent of this role may spawn. Unset: any role whose tools and Bash policy
    are within this one's. Either way a child's powers are clamped to its parent's."""
    check: str | None = Field(default=None, min_length=1)
    """A shell command grove runs in the agent's worktree after it ends (exit 0 passes; see
    :mod:`agentgrove.checks`). A node's ``check:`` or ``--check`` overrides it."""
    fix_rounds: int = Field(default=2, ge=0, le=20)
    """When the check fails: how many more tries the agent gets in the same session."""
    check_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    """Each run of the check is killed, with everything it started, after this long."""
    question_timeout_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    """How long an agent of this role may wait for the answer to a question (``ask_human``);
    ``None``: as long as it takes. Past it the agent fails ``no_answer``, or goes on with
    ``question_default`` when the role sets one."""
    question_default: str | None = Field(default=None, min_length=1, max_length=10_000)
    """The answer an unanswered question gets at ``question_timeout_s``."""

    @field_validator("check")
    @classmethod
    def _check_command(cls, value: str | None) -> str | None:
        reason = None if value is None else check_command_refusal(value)
        if reason is not None:
            raise ValueError(reason)
        return value


def check_command_refusal(command: str) -> str | None:
    """Why ``command`` cannot be a check (blank, or text no database stores), or ``None``.
    Pure."""
    if not command.strip():
        return "a check is a shell command and cannot be empty; give one, e.g. 'pytest -q'"
    reason = unstorable(command)
    return None if reason is None else f"the check command {reason}"


_BASH_RANK: dict[str, int] = {"none": 0, "read-only": 1, "full": 2}


def narrower_bash(a: BashLevel, b: BashLevel) -> BashLevel:
    """The narrower of two Bash policies (``full`` > ``read-only`` > ``none``)."""
    return a if _BASH_RANK[a] <= _BASH_RANK[b] else b


def clamp(child: Role, parent: Role) -> Role:
    """``child`` with no power beyond ``parent``'s: the tools both have, the narrower Bash
    policy, and the smaller budget, fan-out and depth. Pure; apply it down the chain of
    ancestors (each parent already clamped) to get what an agent may really do."""
    return child.model_copy(
        update={
            "tools": tuple(t for t in child.tools if t in parent.tools),
            "bash": narrower_bash(child.bash, parent.bash),
            "max_budget_usd": min(child.max_budget_usd, parent.max_budget_usd),
            "max_children": min(child.max_children, parent.max_children),
            "max_depth": min(child.max_depth, parent.max_depth),
            "may_spawn": _narrower_list(child.may_spawn, parent.may_spawn),
        }
    )


def _narrower_list(
    child: tuple[str, ...] | None, parent: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    if child is None or parent is None:
        return parent if child is None else child
    return tuple(r for r in child if r in parent)


def spawn_refusal(parent: Role, child: Role) -> str | None:
    """Why an agent whose (effective) role is ``parent`` may not spawn ``child``, or ``None``."""
    if parent.may_spawn is not None:
        if child.name not in parent.may_spawn:
            allowed = ", ".join(parent.may_spawn) or "none"
            return (
                f"a {parent.name} may not spawn a {child.name} (may_spawn: {allowed}); "
                "spawn one of those or do the work yourself"
            )
    else:
        wider = [t for t in child.tools if t not in parent.tools]
        if _BASH_RANK[child.bash] > _BASH_RANK[parent.bash] and "Bash" in child.tools:
            wider.append(f"{child.bash} Bash")
        if wider:
            return (
                f"a {child.name} has powers this {parent.name} lacks ({', '.join(wider)}); "
                f"a child never gets more than its parent: spawn a role within yours, or list "
                f"{child.name} in [roles.{parent.name}] may_spawn to get a clamped one"
            )
    if not clamp(child, parent).tools:
        return f"a {child.name} would keep none of its tools under this {parent.name}"
    return None


def _role(
    name: str, description: str, model: str, prompt: str, tools: list[str], **kw: float | str
) -> Role:
    return Role(
        name=name,
        description=description,
        model=model,
        system_prompt=prompt,
        tools=tuple(tools),
        **kw,  # type: ignore[arg-type]
    )


BUILTIN_ROLES: dict[str, Role] = {
    r.name: r
    for r in [
        _role(
            "spec-writer",
            "Turns a request into a precise specification (SPEC.md).",
            SONNET,
            "You are a specification writer. Read the repository, then write a short, testable "
            "specification of what was asked to SPEC.md: behaviour, inputs, outputs, edge cases. "
            "Do not implement it. Finish with a one-paragraph summary of the spec.",
            _EDIT_TOOLS,
            max_turns=20,
            max_budget_usd=1.0,
            timeout_s=900,
        ),
        _role(
            "planner",
            "Breaks a specification into small, ordered implementation steps.",
            SONNET,
            "You are a planner. Read the specification and the code, then write PLAN.md: small "
            "ordered steps, each naming the files it touches and how to check it. Do not "
            "implement. Finish with the list of steps.",
            _EDIT_TOOLS,
            max_turns=20,
            max_budget_usd=1.0,
            timeout_s=900,
        ),
        _role(
            "implementer",
            "Writes and edits code to implement a specification or plan.",
            SONNET,
            "You are an implementer. Implement what the task and any SPEC.md / PLAN.md ask for, "
            "in small, working steps; run the code to check it. Finish with a summary of the "
            "files you changed.",
            _EDIT_TOOLS,
            max_turns=50,
            max_budget_usd=3.0,
            timeout_s=1800,
        ),
        _role(
            "tester",
            "Writes and runs tests; reports what passes and what fails.",
            SONNET,
            "You are a tester. Exercise the code the task names: write tests where useful and run "
            "them with Bash. Report exactly what you ran and what passed or failed.",
            _EDIT_TOOLS,
            max_turns=30,
            max_budget_usd=2.0,
            timeout_s=1200,
        ),
        _role(
            "reviewer",
            "Reviews a change and reports problems; changes nothing.",
            SONNET,
            "You are a reviewer. Read the change and the code around it and report correctness "
            "problems, risks and missing tests, most important first. Do not modify files.",
            _READ_TOOLS,
            max_turns=20,
            max_budget_usd=1.0,
            timeout_s=900,
            bash="read-only",
        ),
        _role(
            "file-writer",
            "Creates or edits a few files exactly as asked; a cheap, fast role.",
            HAIKU,
            "You are a file writer. Create or edit exactly the files the task asks for, with "
            "exactly the content asked for, then say which files you wrote.",
            ["Read", "Write", "Edit"],
            max_turns=10,
            max_budget_usd=0.25,
            timeout_s=300,
        ),
        _role(
            "integrator",
            "Resolves a merge's conflicts and makes the project's check pass (the merge queue).",
            SONNET,
            "You are an integrator. The merge queue left you a merge it could not finish: the "
            "task lists files holding git conflict markers (<<<<<<<, =======, >>>>>>>), the "
            "check command, and its output. Read each conflicted file, keep what both sides "
            "meant, and remove every marker line. Then run the check with Bash and edit until it "
            "passes. Change only what the merge needs; do not commit (grove does) and do not "
            "start other agents. Finish with what you changed and why.",
            _EDIT_TOOLS,
            max_turns=40,
            max_budget_usd=2.0,
            timeout_s=1800,
            max_children=0,
        ),
    ]
}
