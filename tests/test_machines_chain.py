"""A three-node chain whose nodes run on three machines (issue 11).

Each "machine" is its own clone of one bare remote, its own GROVE_HOME and its own ``grove
worker`` process; all share one database (PostgreSQL, or one SQLite file). The nodes have
distinct roles and each worker serves one of them (``--roles``), which pins node 1 to machine
A, node 2 to B and node 3 to C. Each machine's ``[workspace] setup`` writes a file named after
the machine, so a node's result shows which machines' work it holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentgrove.models import AgentRecord, AgentStatus, RunStatus
from agentgrove.store import Store
from agentgrove.workspaces import init_repo
from tests.conftest import GROVE, git, run_cli, wait_until, write_scripted_config

pytestmark = pytest.mark.e2e

CHAIN = """\
name: chain
nodes:
  - key: one
    role: file-writer
    task: Write the first part.
  - key: two
    role: tester
    depends_on: [one]
    task: "Test what one did: {{ one.files_changed }}"
  - key: three
    role: implementer
    depends_on: [two]
    task: Review it all.
"""
ROLES = {"a": "file-writer", "b": "tester", "c": "implementer"}


@dataclass(frozen=True)
class Machine:
    name: str
    clone: Path
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.clone, env=self.env)

    def has(self, commit: str) -> bool:
        proc = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=self.clone, check=False
        )
        return proc.returncode == 0


@pytest.fixture
def cluster(database: str, tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, Machine]]]:
    """The bare remote, the database URL, and machines a, b and c (each ``grove init``-ed)."""
    seed = tmp_path / "seed"
    init_repo(seed, {"README.md": "# shared\n"})
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--bare", "-q", str(seed), str(bare))
    url = os.environ.get("GROVE_DB_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    machines = {}
    for name in ROLES:
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(bare), str(clone))
        write_scripted_config(clone, delay_s=0, lease_s=10)
        with (clone / "grove.toml").open("a") as f:
            f.write(
                f'\n[git]\nremote = "origin"\npush_retry_s = 5\n'
                f'\n[workspace]\nsetup = "echo {name} > from-{name}.txt"\n'
            )
        machine = Machine(name, clone, {"GROVE_HOME": str(tmp_path / f"home-{name}"),
                                        "GROVE_DB_URL": url})  # fmt: skip
        init = machine.cli("init")
        assert init.returncode == 0, init.stderr
        machines[name] = machine
    (tmp_path / "chain.yaml").write_text(CHAIN)
    yield bare, url, machines


def _heads(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _files(repo: Path, commit: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", commit).splitlines())


def test_a_chain_runs_across_three_machines_and_the_remote_holds_every_branch(
    cluster: tuple[Path, str, dict[str, Machine]], tmp_path: Path
) -> None:
    bare, url, m = cluster
    started = m["a"].cli("workflow", "run", str(tmp_path / "chain.yaml"))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    store = Store(url)
    try:

        def node(key: str) -> AgentRecord:
            found = next(n for n in store.get_run(run_id).nodes if n.key == key).agent
            assert found is not None
            return found

        def completed(key: str) -> bool:
            agent = next(n for n in store.get_run(run_id).nodes if n.key == key).agent
            return agent is not None and agent.status is AgentStatus.COMPLETED

        # Machine A serves node 1's role, then is drained (SIGTERM) once node 1 is done.
        worker_a = subprocess.Popen(
            [*GROVE, "worker", "--roles", ROLES["a"]],
            cwd=m["a"].clone, env={**os.environ, **m["a"].env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: completed("one"), timeout_s=120)
        finally:
            worker_a.send_signal(signal.SIGTERM)
            _, err_a = worker_a.communicate(timeout=120)
        assert worker_a.returncode == 0, err_a
        one = node("one")
        assert one.workspace is not None and one.workspace.pushed_commit is not None
        assert not m["b"].has(one.workspace.pushed_commit), "B must not have A's work yet"

        worked_b = m["b"].cli("worker", "--roles", ROLES["b"], "--drain")
        assert worked_b.returncode == 0, worked_b.stderr
        two = node("two")
        assert two.status is AgentStatus.COMPLETED, two
        assert two.workspace is not None
        assert two.workspace.base_ref == one.workspace.pushed_commit  # fetched from the remote
        assert two.workspace.worktree_path.startswith(str(tmp_path / "home-b"))

        worked_c = m["c"].cli("worker", "--roles", ROLES["c"], "--drain")
        assert worked_c.returncode == 0, worked_c.stderr
        run = store.get_run(run_id)
        three = node("three")
        assert three.workspace is not None
        assert three.workspace.worktree_path.startswith(str(tmp_path / "home-c"))
        events = store.events(limit=100_000)
    finally:
        store.close()

    assert run.status is RunStatus.COMPLETED, run
    nodes = {"one": one, "two": two, "three": three}
    for key, agent in nodes.items():
        claims = [e for e in events if e.agent_id == agent.id and e.kind == "agent.claimed"]
        assert (agent.attempt, len(claims)) == (1, 1), (key, agent.attempt, claims)
        assert agent.status is AgentStatus.COMPLETED

    # The remote holds every agent's branch at its recorded (pushed) commit, and the run branch.
    heads = _heads(bare)
    for key, agent in nodes.items():
        ws = agent.workspace
        assert ws is not None and ws.pushed_commit == ws.head_commit, (key, ws)
        assert heads.get(f"grove/{agent.id}") == ws.pushed_commit, (key, heads)
    assert three.workspace.pushed_commit is not None
    assert heads.get(f"grove/run/{run_id}") == three.workspace.pushed_commit, heads
    # Node 3's result holds the work of all three machines (each setup's file).
    assert {"from-a.txt", "from-b.txt", "from-c.txt"} <= _files(bare, three.workspace.head_commit)
    # The user's branches on the remote are untouched: only grove/ branches were pushed.
    assert {b for b in heads if not b.startswith("grove/")} == {"main"}

    # Machine A, which has none of B's or C's commits, reports the same result branch.
    shown = m["a"].cli("workflow", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr

    record = json.loads(shown.stdout)
    assert record["result_branch"] == f"grove/run/{run_id}", record
    assert record["result_commit"] == heads[f"grove/run/{run_id}"]


ONE_NODE = """\
name: single
nodes:
  - key: only
    role: file-writer
    task: Write it.
"""


def test_a_rejected_push_of_the_run_branch_is_reported_with_gits_words(
    cluster: tuple[Path, str, dict[str, Machine]], tmp_path: Path
) -> None:
    """Someone else's ``grove/run/<id>`` on the remote: grove never forces it, and says so."""
    bare, url, m = cluster
    (tmp_path / "single.yaml").write_text(ONE_NODE)
    started = m["a"].cli("workflow", "run", str(tmp_path / "single.yaml"))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    squatter = m["b"].clone
    (squatter / "other.txt").write_text("not grove's\n")
    git(squatter, "add", "other.txt")
    git(squatter, "-c", "user.name=me", "-c", "user.email=me@example.invalid",
        "commit", "-q", "-m", "someone's")  # fmt: skip
    git(squatter, "push", "-q", "origin", f"HEAD:refs/heads/grove/run/{run_id}")
    theirs = _heads(bare)[f"grove/run/{run_id}"]

    worked = m["a"].cli("worker", "--drain")
    assert worked.returncode == 0, worked.stderr
    assert _heads(bare)[f"grove/run/{run_id}"] == theirs  # never forced
    store = Store(url)
    try:
        assert store.get_run(run_id).status is RunStatus.COMPLETED
        failed = [e for e in store.events(limit=100_000) if e.kind == "run.push_failed"]
    finally:
        store.close()
    assert len(failed) == 1, failed
    assert failed[0].data["branch"] == f"grove/run/{run_id}"
    assert "rejected" in failed[0].data["error"], failed[0].data
    shown = m["a"].cli("workflow", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    line = next(ln for ln in shown.stdout.splitlines() if ln.startswith("result:"))
    assert "not on the remote" in line and "rejected" in line, shown.stdout


def test_the_merge_queue_takes_another_machines_result_and_pushes_only_grove_branches(
    cluster: tuple[Path, str, dict[str, Machine]],
) -> None:
    """B queues A's agent: its commit is fetched; main (the user's) is never pushed, and the
    result kept on ``grove/queue/<id>`` (main could not take it) reaches the remote."""
    bare, _, m = cluster
    spawned = m["a"].cli("spawn", "file-writer", "write it")
    assert spawned.returncode == 0, spawned.stderr
    agent_id = spawned.stdout.strip()
    worked = m["a"].cli("worker", "--drain")
    assert worked.returncode == 0, worked.stderr
    main_before = _heads(bare)["main"]
    # An untracked file in the way: the queue must not overwrite it, so it keeps its result.
    (m["b"].clone / "from-a.txt").write_text("mine, not committed\n")
    queued = m["b"].cli("merge", agent_id, "--into", "main")
    assert queued.returncode == 1, queued.stderr + queued.stdout
    kept = next(
        word.rstrip(":")
        for line in queued.stdout.splitlines()
        for word in line.split()
        if word.startswith("grove/queue/")
    )
    heads = _heads(bare)
    assert kept in heads, (queued.stdout, heads)
    assert "from-a.txt" in _files(bare, heads[kept])
    assert heads["main"] == main_before
    assert "not on the remote" not in queued.stdout


FORK = """\
name: fork
nodes:
  - key: one
    role: file-writer
    task: Write the first part.
  - key: two
    role: tester
    depends_on: [one]
    task: Test it.
  - key: three
    role: implementer
    depends_on: [one]
    task: Build on it.
"""


def test_two_sinks_on_two_machines_make_one_run_branch_every_machine_agrees_on(
    cluster: tuple[Path, str, dict[str, Machine]], tmp_path: Path
) -> None:
    """The machine completing the run merges a sink another machine ran (fetched), pushes the
    merge; the other machines take that merge as it is instead of making their own."""
    bare, _, m = cluster
    (tmp_path / "fork.yaml").write_text(FORK)
    started = m["a"].cli("workflow", "run", str(tmp_path / "fork.yaml"))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    for name in ("a", "b", "c"):
        worked = m[name].cli("worker", "--roles", ROLES[name], "--drain")
        assert worked.returncode == 0, worked.stderr
    branch = f"grove/run/{run_id}"
    on_remote = _heads(bare).get(branch)
    assert on_remote is not None
    assert {"from-a.txt", "from-b.txt", "from-c.txt"} <= _files(bare, on_remote)
    assert len(git(bare, "show", "-s", "--format=%P", on_remote).split()) == 2  # a merge
    for name in ("a", "b"):
        shown = m[name].cli("workflow", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["result_commit"] == on_remote, name
        assert git(m[name].clone, "rev-parse", f"refs/heads/{branch}") == on_remote
    assert _heads(bare)[branch] == on_remote
