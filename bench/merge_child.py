"""What merging a child's work into its parent costs, next to the same ``git merge`` alone.

    .venv/bin/python bench/merge_child.py [--quick] [--children N] [--files N]

A parent (ScriptedRuntime, in a git repository of ``--files`` files) spawns N children; each
child edits one file of its own and adds another. The parent waits until all completed (polling
``agent_result``, which merges nothing), then merges them one by one with ``merge_agent``:
grove's whole path for one child (the tool call, the store reads, the parent's
work-in-progress commit, the already-merged check, the hardened ``git merge --no-ff``, the
refreshed workspace record and its fenced write, the event). Each call is timed.

Floor: the same merges of the same child commits, in the same order, onto the same starting
commit, each one ``git merge --no-ff --no-edit -q -m MSG SHA`` run by ``sh -c`` in a worktree of
its own (a user typing it in a shell). Reported: ms per child, median and p99, and the ratio.
Every run is checked: each merge_agent said merged, and the parent's branch and the floor's
hold the same tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from overhead import percentile  # bench/ is the script's folder: one percentile for every bench
from rich.console import Console
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker
from agentgrove.workspaces import init_repo

console = Console(width=None if sys.stdout.isatty() else 150)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def through_grove(repo: Path, children: int) -> tuple[list[float], list[str], str, str]:
    """ms per ``merge_agent`` call, the children's head commits in spawn order, the commit
    they started from (the parent's work-in-progress commit) and the parent's final tree."""
    timings: list[float] = []
    ids: list[str] = []

    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.prompt.startswith("child "):
            n = int(spec.prompt.split()[1])
            (spec.cwd / f"src/f{n:04d}.py").write_text(f"VALUE = {n}  # edited by child\n")
            (spec.cwd / f"new/c{n:04d}.txt").parent.mkdir(exist_ok=True)
            (spec.cwd / f"new/c{n:04d}.txt").write_text(f"child {n}\n")
            return RunResult(success=True, output="done")
        for n in range(children):
            ids.append(await spec.delegate.spawn_agent("implementer", f"child {n}"))
        for child in ids:
            while (await spec.delegate.agent_result(child))["status"] != "completed":
                await anyio.sleep(0.01)
        for child in ids:
            start = time.perf_counter()
            entry = await spec.delegate.merge_agent(child)  # type: ignore[attr-defined]
            timings.append((time.perf_counter() - start) * 1000)
            if entry["merge"]["result"] != "merged":
                raise SystemExit(f"bench: child {child} not merged: {entry}")
        return RunResult(success=True, output="merged")

    (repo / "grove.toml").write_text(f"[roles.planner]\nmax_children = {children}\n")
    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        parent = grove.spawn("planner", "fan out, then merge one by one")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=4).run)
        record = grove.get(parent.id)
        if record.status is not AgentStatus.COMPLETED:
            raise SystemExit(f"bench: the parent {record.status.value}: {record.error}")
        heads = []
        for child in ids:
            ws = grove.get(child).workspace
            assert ws is not None and ws.head_commit is not None
            heads.append(ws.head_commit)
        base = grove.get(ids[0]).workspace
        assert base is not None and base.base_ref is not None
        assert record.workspace is not None and record.workspace.head_commit is not None
        tree = git(repo, "rev-parse", f"{record.workspace.head_commit}^{{tree}}")
        return timings, heads, base.base_ref, tree


def floor(repo: Path, base: str, heads: list[str], scratch: Path) -> tuple[list[float], str]:
    """ms per ``git merge`` run alone from a shell, and the resulting tree."""
    tree = scratch / "floor"
    git(repo, "worktree", "add", "--quiet", "--detach", str(tree), base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b"}
    env |= {"GIT_COMMITTER_EMAIL": "b@x"}
    timings = []
    for sha in heads:
        start = time.perf_counter()
        subprocess.run(
            ["sh", "-c", f"git merge --no-ff --no-edit -q -m 'merge {sha[:8]}' {sha}"],
            cwd=tree,
            env=env,
            check=True,
            capture_output=True,
        )
        timings.append((time.perf_counter() - start) * 1000)
    return timings, git(tree, "rev-parse", "HEAD^{tree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 children instead of 40")
    parser.add_argument("--children", type=int, default=None)
    parser.add_argument("--files", type=int, default=500, help="files in the repository")
    args = parser.parse_args()
    children = args.children or (10 if args.quick else 40)
    scratch = Path(tempfile.mkdtemp(prefix="grove-bench-merge-"))
    try:
        repo = scratch / "repo"
        files = {"README.md": "# bench\n"}
        init_repo(repo, files)
        (repo / "src").mkdir()
        for n in range(args.files):
            (repo / f"src/f{n:04d}.py").write_text(f"VALUE = {n}\n")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "files")
        grove_ms, heads, base, parent_tree = through_grove(repo, children)
        floor_ms, floor_tree = floor(repo, base, heads, scratch)
        same = floor_tree == parent_tree
        table = Table(
            title=f"merging a child into its parent: {children} children, {args.files} files",
            caption=(
                f"ms per child; grove = merge_agent (commit, check, git merge, record, event); "
                f"floor = `git merge --no-ff` alone in sh; same tree: {'yes' if same else 'NO'}; "
                f"load {os.getloadavg()[0]:.1f}"
            ),
            title_justify="left",
            caption_justify="left",
            min_width=110,
        )
        for column in ("path", "median ms", "p99 ms", "mean ms"):
            table.add_column(column, justify="left" if column == "path" else "right")
        rows: list[tuple[str, list[float]]] = [
            ("grove merge_agent", grove_ms),
            ("git merge", floor_ms),
        ]
        for name, values in rows:
            table.add_row(
                name,
                f"{statistics.median(values):.1f}",
                f"{percentile(values, 99):.1f}",
                f"{statistics.fmean(values):.1f}",
            )
        ratio = statistics.median(grove_ms) / statistics.median(floor_ms)
        p99_ratio = percentile(grove_ms, 99) / percentile(floor_ms, 99)
        table.add_row("ratio", f"{ratio:.2f}x", f"{p99_ratio:.2f}x", "")
        console.print(table)
        if not same:
            raise SystemExit("bench: the parent's tree differs from the floor's")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
