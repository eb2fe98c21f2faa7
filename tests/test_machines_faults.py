"""Machines that fail, and machines that share one agent's family: each "machine" is its own
clone of one bare remote, its own grove home, its own ``$HOME`` (the CLI's config directory,
where it keeps sessions) and its own host name (a UTS namespace), running its own
``grove worker`` process against one PostgreSQL database; agents run through the real SDK and
CLI against the scripted model server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentgrove.processes import agent_processes
from agentgrove.testing import (
    Fault,
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    say,
    tool_use,
    write_file,
)
from agentgrove.workspaces import init_repo
from tests.conftest import GROVE, git, run_cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LEASE_S = 3.0


@dataclass(frozen=True)
class Machine:
    name: str
    clone: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return Path(self.env["GROVE_HOME"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.clone, env=self.env)

    def show(self, agent_id: str) -> dict[str, Any]:
        shown = self.cli("show", agent_id, "--json")
        assert shown.returncode == 0, shown.stderr
        record: dict[str, Any] = json.loads(shown.stdout)
        return record

    def worker(self, server: ModelServer, *args: str) -> subprocess.Popen[str]:
        """``grove worker`` on this machine: its own host name (a UTS namespace: another
        machine cannot tell whether its process lives), its environment, its clone."""
        naming = 'hostname "$0" && exec "$@"'
        return subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", naming, self.name, *GROVE, "worker", *args],
            cwd=self.clone,
            env={**os.environ, **server.env(), **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    init_repo(seed, {"README.md": "# shared\n"})
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--bare", "-q", str(seed), str(bare))
    return bare


def _machine(tmp_path: Path, remote: Path, pg_url: str, name: str) -> Machine:
    clone = tmp_path / name
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    (clone / "grove.toml").write_text(
        f"""
[worker]
lease_s = {LEASE_S}
heartbeat_s = 0.3
poll_s = 0.1
grace_s = 0
retry_base_s = 0

[git]
remote = "origin"
push_retry_s = 5
"""
    )
    home = tmp_path / f"{name}-user"
    home.mkdir()
    env = {"GROVE_DB_URL": pg_url, "GROVE_HOME": str(tmp_path / f"{name}-home"), "HOME": str(home)}
    machine = Machine(name, clone, env)
    done = machine.cli("init")
    assert done.returncode == 0, done.stderr
    return machine


@pytest.fixture
def machines(tmp_path: Path, remote: Path, pg_url: str) -> dict[str, Machine]:
    return {
        n: _machine(tmp_path, remote, pg_url, n) for n in ("machine-a", "machine-b", "machine-c")
    }


def _heads(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _files(bare: Path, ref: str) -> set[str]:
    return set(git(bare, "ls-tree", "-r", "--name-only", ref).split())


def _agents(machine: Machine) -> list[dict[str, Any]]:
    listed = machine.cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    return rows


def _spawn(role: str, task: str) -> Turn:
    return Turn([tool_use("mcp__grove__spawn_agent", {"role": role, "task": task})])


def _stop(worker: subprocess.Popen[str]) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    return err


CONTINUES = "continue earlier work that is already committed"


@pytest.mark.parametrize("cli_home", ["own", "shared"])
def test_a_machine_killed_mid_agent_is_finished_elsewhere_from_its_last_pushed_commit(
    machines: dict[str, Machine], remote: Path, cli_home: str
) -> None:
    """Machine A runs a planner that writes wip.txt and spawns a child (grove commits and
    pushes the work in progress first), then A dies: kill -9 of its worker and of every CLI
    process it started. Machine B, which never had the branch, reclaims the planner once the
    lease expires and finishes it from the pushed commit. With its own CLI home (``own``: A's
    session file is on A) B starts a fresh session, told what is committed and which child
    exists; where the session file is reachable (``shared``, as after a restart of the same
    machine) B resumes A's session. Either way nothing is written or spawned twice."""
    a, b = machines["machine-a"], machines["machine-b"]
    if cli_home == "shared":
        b = Machine(b.name, b.clone, {**b.env, "HOME": a.env["HOME"]})
    known: dict[str, str] = {}

    def wait_for_the_child(request: ModelRequest) -> Turn:
        ids = [known["child"]]
        return Turn([tool_use("mcp__grove__wait_agents", {"ids": ids, "timeout_s": 120})])

    def first_run(request: ModelRequest) -> bool:
        return "This is attempt" not in request.prompt

    done = say("the child's work is merged; done")
    first = [
        write_file("wip.txt", "written on machine A\n"),
        _spawn("implementer", "write child.txt"),
        Fault.slow(3600, say("never")),  # A is killed while the model "thinks"
    ]
    script = Script()
    if cli_home == "shared":  # the resumed conversation goes on where A's stopped
        script.on(role="planner", match=first_run, turns=[*first, wait_for_the_child, done])
    else:
        script.on(role="planner", match=first_run, times=1, turns=first)
        script.on(
            role="planner", prompt_contains="This is attempt 2", turns=[wait_for_the_child, done]
        )
    script.on(
        role="implementer",
        turns=[write_file("child.txt", "from the child\n"), say("wrote child.txt")],
    )
    with ModelServer(script) as server:
        spawned = a.cli("spawn", "planner", "plan and delegate")
        assert spawned.returncode == 0, spawned.stderr
        parent = spawned.stdout.strip()
        branch = f"grove/{parent}"
        worker_a = a.worker(server, "--roles", "planner")
        try:
            # The model is answering the request after spawn_agent returned: the work in
            # progress was committed and pushed before the child was spawned.
            wait_until(lambda: sum(r.role == "planner" for r in server.requests) >= 3, 120)
            pushed_wip = _heads(remote)[branch]
            assert "wip.txt" in _files(remote, pushed_wip)
            assert agent_processes(parent), "A's CLI is running the planner"
        finally:
            worker_a.send_signal(signal.SIGKILL)
            for pid in agent_processes(parent):
                os.kill(pid, signal.SIGKILL)
            _, err_a = worker_a.communicate(timeout=60)
        wait_until(lambda: not agent_processes(parent), 30)
        assert worker_a.returncode == -signal.SIGKILL, err_a
        killed = a.show(parent)
        assert killed["status"] == "executing" and killed["host"] == "machine-a"
        assert killed["session_id"], "the session A's CLI named was recorded"
        [known["child"]] = [r["id"] for r in _agents(a) if r["id"] != parent]

        worker_b = b.worker(server, "--concurrency", "2")
        try:
            wait_until(lambda: b.show(parent)["status"] in ("completed", "failed"), 180)
        finally:
            err_b = _stop(worker_b)
        server.assert_done()
        planner_requests = [r for r in server.requests if r.role == "planner"]
    final = b.show(parent)
    assert final["status"] == "completed", (final["error"], err_b)
    assert final["attempt"] == 2 and final["host"] == "machine-b"
    # B's worktree, on the branch it took from the remote: A's work in progress is there.
    ws = final["workspace"]
    worktree = Path(ws["path"])
    assert worktree.is_relative_to(b.home)
    assert (worktree / "wip.txt").read_text() == "written on machine A\n"
    # The branch on the remote continues A's pushed commit, with the child's work merged.
    tip = _heads(remote)[branch]
    assert tip == ws["head_commit"] == ws["pushed_commit"]
    git(remote, "merge-base", "--is-ancestor", pushed_wip, tip)
    assert {"wip.txt", "child.txt"} <= _files(remote, tip)
    # Nothing done twice: one child, run once; wip.txt written once (by A); its branch pushed.
    children = [row for row in _agents(b) if row["id"] != parent]
    assert [(c["id"], c["role"], c["attempt"]) for c in children] == [
        (known["child"], "implementer", 1)
    ]
    assert f"grove/{known['child']}" in _heads(remote)
    writes = [r for r in planner_requests if r.turn_index == 0 and first_run(r)]
    assert len(writes) == 1
    on_b = planner_requests[3:]  # A's three requests came first
    events = [json.loads(line) for line in b.cli("logs", parent, "--json").stdout.splitlines()]
    [session] = [e["data"] for e in events if e["kind"] == "agent.session"]
    if cli_home == "own":
        # Not A's session (its file is on A): a fresh one, told it continues.
        assert on_b[0].turn_index == 0 and CONTINUES in on_b[0].prompt
        assert f"- {known['child']} (implementer)" in on_b[0].prompt
        assert killed["session_id"] not in {r.session_id for r in on_b}
        assert session["resume"] is None and "not on this machine" in session["reason"]
    else:
        # A's session, resumed: its history (the write, the spawn) comes along.
        assert on_b[0].turn_index == 3 and on_b[0].session_id == killed["session_id"]
        assert session["resume"] == killed["session_id"]


def test_a_parent_on_one_machine_merges_children_that_ran_on_two_others(
    machines: dict[str, Machine], remote: Path
) -> None:
    """A planner pinned to machine C fans out an implementer (pinned to A) and a tester
    (pinned to B) and waits: grove fetches each child's pushed commit on C and merges both
    into the planner's branch, by the child-merge rules (spawn order, one merge each)."""
    a, b, c = machines["machine-a"], machines["machine-b"], machines["machine-c"]
    ids: list[str] = []
    seen: dict[str, Any] = {}

    def spawn_second(request: ModelRequest) -> Turn:
        ids.append(json.loads(request.tool_results[0])["id"])
        return _spawn("tester", "write beta.txt")

    def wait_for_both(request: ModelRequest) -> Turn:
        ids.append(json.loads(request.tool_results[0])["id"])
        return Turn([tool_use("mcp__grove__wait_agents", {"ids": list(ids), "timeout_s": 120})])

    def report(request: ModelRequest) -> Turn:
        seen["wait"] = json.loads(request.tool_results[0])
        return say("both children merged")

    script = (
        Script()
        .on(
            role="planner",
            turns=[
                write_file("plan.txt", "alpha, then beta\n"),
                _spawn("implementer", "write alpha.txt"),
                spawn_second,
                wait_for_both,
                report,
            ],
        )
        .on(role="implementer", turns=[write_file("alpha.txt", "A\n"), say("wrote alpha.txt")])
        .on(role="tester", turns=[write_file("beta.txt", "B\n"), say("wrote beta.txt")])
    )
    with ModelServer(script) as server:
        spawned = c.cli("spawn", "planner", "fan out to two machines")
        assert spawned.returncode == 0, spawned.stderr
        parent = spawned.stdout.strip()
        workers = [
            c.worker(server, "--roles", "planner"),
            a.worker(server, "--roles", "implementer"),
            b.worker(server, "--roles", "tester"),
        ]
        try:
            wait_until(lambda: c.show(parent)["status"] in ("completed", "failed"), 180)
        finally:
            errors = [_stop(w) for w in workers]
        server.assert_done()
    final = c.show(parent)
    assert final["status"] == "completed", (final["error"], errors)
    hosts = {final["host"]} | {a.show(i)["host"] for i in ids}
    assert [c.show(i)["host"] for i in ids] == ["machine-a", "machine-b"]
    assert final["host"] == "machine-c" and hosts == {"machine-a", "machine-b", "machine-c"}
    # Each child's branch is on the remote with its own work; the parent's has both.
    heads = _heads(remote)
    for child_id, name in zip(ids, ("alpha.txt", "beta.txt"), strict=True):
        child_tip = heads[f"grove/{child_id}"]
        assert child_tip == c.show(child_id)["workspace"]["pushed_commit"]
        assert name in _files(remote, child_tip)
        git(remote, "merge-base", "--is-ancestor", child_tip, heads[f"grove/{parent}"])
    tip = heads[f"grove/{parent}"]
    assert tip == final["workspace"]["pushed_commit"]
    assert {"plan.txt", "alpha.txt", "beta.txt"} <= _files(remote, tip)
    assert [(e["id"], e["merge"]["result"]) for e in seen["wait"]] == [
        (ids[0], "merged"),
        (ids[1], "merged"),
    ]
    assert [e["merge"]["files"] for e in seen["wait"]] == [["alpha.txt"], ["beta.txt"]]
