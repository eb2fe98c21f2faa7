"""Several machines share one database: a clone of another repository pointed at it is refused
before any claim, and an agent whose base no clone can find fails cleanly, with nothing half
made. Real git, the real ``grove`` CLI, SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentgrove.clone_check import judge_clone
from agentgrove.dashboard import create_app
from agentgrove.errors import BadRef
from agentgrove.grove import Grove
from agentgrove.remotes import branch_source
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, say, write_file
from agentgrove.workspaces import Workspaces, init_repo
from tests import test_remotes
from tests.conftest import GROVE, git, run_cli, wait_until, write_scripted_config
from tests.test_remotes import _commit, _env, _heads

machines = test_remotes.machines  # the two-machine fixture (a bare remote, clones a and b)

A_SHA, B_SHA, C_SHA = "a" * 40, "b" * 40, "c" * 40


def test_judge_clone() -> None:
    bases = [(A_SHA, "agent 1"), (B_SHA, "run 2")]
    assert judge_clone(bases, frozenset({A_SHA, B_SHA})).foreign is None
    partly = judge_clone(bases, frozenset({B_SHA}))
    assert partly.foreign is None and partly.missing == ((A_SHA, "agent 1"),)
    assert judge_clone(bases, frozenset({C_SHA})).foreign == (A_SHA, "agent 1")
    assert judge_clone([], frozenset()).foreign is None  # nothing to judge by
    assert judge_clone([("main", "agent 3")], frozenset()).foreign is None  # not a commit id


def test_branch_source() -> None:
    assert branch_source(A_SHA, True, None) == "local"  # ran here
    assert branch_source(A_SHA, False, B_SHA) == "tracking"  # a later attempt ran elsewhere
    assert branch_source(None, False, B_SHA) == "tracking"  # ran on another machine
    assert branch_source(A_SHA, False, None) == "local"  # the best there is
    assert branch_source(None, False, None) is None


def _foreign_clone(tmp_path: Path) -> Path:
    """A clone of another repository (its own bare remote), its grove on the shared database."""
    seed = tmp_path / "other-seed"
    init_repo(seed, {"OTHER.md": "another project\n"})
    bare = tmp_path / "other.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(bare), str(other)], check=True)
    write_scripted_config(other, delay_s=0, lease_s=10)
    with (other / "grove.toml").open("a") as f:
        f.write('\n[git]\nremote = "origin"\npush_retry_s = 5\n')
    init = run_cli("init", cwd=other, env=_env(tmp_path, "other"))
    assert init.returncode == 0, init.stderr
    return other


def test_a_clone_of_another_repository_is_refused_before_any_claim(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, _ = machines
    spawned = run_cli("spawn", "tester", "look", cwd=a, env=_env(tmp_path, "a"))
    assert spawned.returncode == 0, spawned.stderr
    agent_id = spawned.stdout.strip()
    base = git(a, "rev-parse", "HEAD")
    other = _foreign_clone(tmp_path)
    result = run_cli("worker", "--drain", cwd=other, env=_env(tmp_path, "other"))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert base[:12] in line and f"agent {agent_id}" in line and str(other) in line, line
    assert "another repository" in line and "git clone" in line, line
    shown = run_cli("show", agent_id, "--json", cwd=a, env=_env(tmp_path, "a"))
    record = json.loads(shown.stdout)
    assert record["status"] == "pending" and record["attempt"] == 0, record  # never claimed
    assert not (tmp_path / "home-other" / "worktrees").exists() or not any(
        (tmp_path / "home-other" / "worktrees").iterdir()
    )
    # A clone of the same repository starts and runs it.
    _, _, b = machines
    worked = run_cli("worker", "--drain", cwd=b, env=_env(tmp_path, "b"))
    assert worked.returncode == 0, worked.stderr
    record = json.loads(run_cli("show", agent_id, "--json", cwd=a, env=_env(tmp_path, "a")).stdout)
    assert record["status"] == "completed", record


def test_a_base_no_clone_can_find_fails_its_agent_with_nothing_half_made(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """B can find the first agent's base (on the remote) but not the second's (a commit A
    never pushed): B starts, says so, runs the first, and fails the second naming the commit,
    leaving no worktree and no branch for it."""
    _, a, b = machines
    env_a, env_b = _env(tmp_path, "a"), _env(tmp_path, "b")
    good = run_cli("spawn", "tester", "look", cwd=a, env=env_a).stdout.strip()
    unpushed = _commit(a, "only-on-a.txt")
    spawned = run_cli("spawn", "tester", "look", "--base", unpushed, cwd=a, env=env_a)
    assert spawned.returncode == 0, spawned.stderr
    stray = spawned.stdout.strip()
    worked = run_cli("worker", "--drain", cwd=b, env=env_b)
    assert worked.returncode == 0, worked.stderr
    assert f"agent {stray}'s base {unpushed[:12]}" in worked.stderr, worked.stderr
    records = {
        i: json.loads(run_cli("show", i, "--json", cwd=a, env=env_a).stdout) for i in (good, stray)
    }
    assert records[good]["status"] == "completed", records[good]
    failed = records[stray]
    assert failed["status"] == "failed", failed
    assert unpushed[:12] in failed["error"] and "nor on remote 'origin'" in failed["error"], failed
    assert failed["workspace"] is None, failed
    assert not list((tmp_path / "home-b").rglob(stray))  # no worktree, nothing half made
    assert git(b, "branch", "--list", f"grove/{stray}") == ""


def test_a_merge_commit_no_clone_has_is_not_taken_for_a_conflict(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, b = machines
    base = git(b, "rev-parse", "HEAD")
    unpushed = _commit(a, "dep.txt")
    on_b = Workspaces(b, tmp_path / "wb", b, remote="origin", push_retry_s=5)
    with pytest.raises(BadRef, match=f"merge commit {unpushed[:12]} is neither in"):
        on_b.create("agent9", base, (unpushed,))
    assert not (tmp_path / "wb" / "agent9").exists()
    assert git(b, "branch", "--list", "grove/agent9") == ""
    assert "agent9" not in git(b, "worktree", "list")


# -- an agent another machine ran: diff, show, merge and the dashboard fetch its branch ----

_REAL_RUNTIME = """
[worker]
lease_s = 10
heartbeat_s = 0.3
poll_s = 0.1
grace_s = 0

[git]
remote = "origin"
push_retry_s = {push_retry_s}
"""


def _real_runtime(clone: Path, push_retry_s: float = 5) -> None:
    """``clone``'s grove runs agents through the real SDK and CLI (against a ModelServer)."""
    (clone / "grove.toml").write_text(_REAL_RUNTIME.format(push_retry_s=push_retry_s))


def test_diff_show_merge_and_the_dashboard_fetch_a_branch_another_machine_pushed(
    database: str,
    machines: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent runs on B; B's disk is then out of A's reach (moved away). On A, `grove diff`
    shows its change, `show` says where the branch came from, the dashboard shows the patch,
    and `grove merge` lands it on A's current branch; A's own branches gain nothing."""
    bare, a, b = machines
    _real_runtime(b)
    env_a, env_b = _env(tmp_path, "a"), _env(tmp_path, "b")
    spawned = run_cli("spawn", "file-writer", "write hello.txt", cwd=a, env=env_a)
    assert spawned.returncode == 0, spawned.stderr
    agent_id = spawned.stdout.strip()
    script = Script().on(
        role="file-writer", turns=[write_file("hello.txt", "hello from b\n"), say("written")]
    )
    with ModelServer(script) as server:
        worked = run_cli("worker", "--drain", cwd=b, env={**env_b, **server.env()})
        assert worked.returncode == 0, worked.stderr
    # Machine B is somewhere else now: A reaches nothing of it but the remote.
    b.rename(tmp_path / "b-elsewhere")
    (tmp_path / "home-b").rename(tmp_path / "home-b-elsewhere")
    before = git(a, "for-each-ref", "--format=%(refname)", "refs/heads")

    diffed = run_cli("diff", agent_id, cwd=a, env=env_a)
    assert diffed.returncode == 0, diffed.stderr
    assert "+hello from b" in diffed.stdout and "hello.txt" in diffed.stdout, diffed.stdout
    tracking = f"refs/remotes/grove-remote/grove/{agent_id}"
    assert git(a, "rev-parse", tracking) == _heads(bare)[f"refs/heads/grove/{agent_id}"]

    shown = run_cli("show", agent_id, cwd=a, env=env_a)
    assert shown.returncode == 0, shown.stderr
    assert f"from the remote: {tracking}" in " ".join(shown.stdout.split()), shown.stdout

    monkeypatch.setenv("GROVE_HOME", env_a["GROVE_HOME"])
    monkeypatch.setenv("GROVE_DB_URL", env_a["GROVE_DB_URL"])
    with Grove.open(a) as grove:
        page = TestClient(create_app(grove)).get(f"/agents/{agent_id}").text
    assert "+hello from b" in page, page

    merged = run_cli("merge", agent_id, cwd=a, env=env_a)
    assert merged.returncode == 0, merged.stderr
    assert git(a, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(a, "show", "HEAD:hello.txt") == "hello from b"
    assert (a / "hello.txt").read_text() == "hello from b\n"
    # Fetched into grove's tracking refs only: A's own branches are as they were.
    assert git(a, "for-each-ref", "--format=%(refname)", "refs/heads") == before


# -- the remote away for a while as an agent finishes ---------------------------------------

CHAIN = """
name: across
nodes:
  - {key: make, role: file-writer, task: "Write result.txt"}
  - {key: look, role: tester, task: "Look at it. {{ make.output }}", depends_on: [make]}
"""


def _node(a: Path, env: dict[str, str], run_id: str, key: str) -> dict[str, Any] | None:
    """The agent of node ``key`` as `grove show --json` prints it; ``None`` before it exists."""
    shown = run_cli("workflow", "show", run_id, "--json", cwd=a, env=env)
    assert shown.returncode == 0, shown.stderr
    nodes = {n["key"]: n for n in json.loads(shown.stdout)["nodes"]}
    agent_id = nodes[key]["agent_id"]
    if agent_id is None:
        return None
    record: dict[str, Any] = json.loads(run_cli("show", agent_id, "--json", cwd=a, env=env).stdout)
    return record


def test_a_push_to_a_remote_away_for_a_while_lands_and_the_dependent_waits_for_it(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Node 1 runs on A (the real CLI), node 2 only on B (``--roles tester``). The bare remote
    is moved away as node 1 finishes: A's push retries (``push_retry_s`` long), node 1 stays
    executing and node 2 does not start; moved back, the push lands, node 1 completes with its
    output and tokens, and node 2 starts on B from the pushed commit (its worktree holds
    node 1's file, which B could only have fetched from the remote)."""
    bare, a, b = machines
    _real_runtime(a, push_retry_s=300)
    env_a, env_b = _env(tmp_path, "a"), _env(tmp_path, "b")
    (tmp_path / "across.yaml").write_text(CHAIN)
    started = run_cli("workflow", "run", str(tmp_path / "across.yaml"), "--json", cwd=a, env=env_a)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]

    written, go = threading.Event(), threading.Event()

    def hold_the_last_turn(request: ModelRequest) -> Turn:
        written.set()  # the Write tool ran: result.txt is in A's worktree
        go.wait(timeout=120)
        return say("result.txt written")

    script = Script().on(
        role="file-writer", turns=[write_file("result.txt", "made on a\n"), hold_the_last_turn]
    )
    away = tmp_path / "away.git"
    logs = {name: (tmp_path / f"worker-{name}.err").open("w+") for name in ("a", "b")}
    with ModelServer(script) as server:
        workers = {
            "a": subprocess.Popen(
                [*GROVE, "worker", "--roles", "file-writer"],
                cwd=a,
                env={**os.environ, **env_a, **server.env()},
                stdout=subprocess.DEVNULL,
                stderr=logs["a"],
            ),
            "b": subprocess.Popen(
                [*GROVE, "worker", "--roles", "tester"],
                cwd=b,
                env={**os.environ, **env_b},
                stdout=subprocess.DEVNULL,
                stderr=logs["b"],
            ),
        }
        try:
            wait_until(written.is_set, timeout_s=120)
            bare.rename(away)
            go.set()
            err_a = tmp_path / "worker-a.err"
            wait_until(lambda: "retrying" in err_a.read_text(), timeout_s=60)
            # The push is failing: node 1 has not completed, node 2 has not started.
            make = _node(a, env_a, run_id, "make")
            assert make is not None and make["status"] == "executing", make
            assert _node(a, env_a, run_id, "look") is None
            away.rename(bare)

            def finished() -> bool:
                make, look = _node(a, env_a, run_id, "make"), _node(a, env_a, run_id, "look")
                if make is not None and make["status"] == "failed":
                    return True  # the work was lost: asserted below
                return look is not None and look["status"] in ("completed", "failed")

            wait_until(finished, timeout_s=120)
        finally:
            go.set()
            for worker in workers.values():
                worker.send_signal(signal.SIGTERM)
            for worker in workers.values():
                worker.wait(timeout=60)
            for log in logs.values():
                log.close()
    make, look = _node(a, env_a, run_id, "make"), _node(a, env_a, run_id, "look")
    assert make is not None and look is not None
    assert make["status"] == "completed" and look["status"] == "completed", (make, look)
    assert make["output"] == "result.txt written" and make["tokens_in"] > 0, make
    assert make["attempt"] == 1 and look["attempt"] == 1
    head = make["workspace"]["head_commit"]
    assert make["workspace"]["pushed_commit"] == head
    assert _heads(bare)[f"refs/heads/grove/{make['id']}"] == head
    assert look["workspace"]["base_ref"] == head, look
    assert look["workspace"]["path"].startswith(str(tmp_path / "home-b")), look
    assert (Path(look["workspace"]["path"]) / "result.txt").read_text() == "made on a\n"
