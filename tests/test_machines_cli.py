"""Several machines, as the CLI sees them: two clones of one bare repository, each with its own
grove home, sharing one PostgreSQL database; `grove worker --roles/--repo/--print-systemd-unit`
and the HOST column of `grove ls`."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from agentgrove.models import AgentStatus
from agentgrove.workspaces import init_repo
from tests.conftest import GROVE, git, run_cli, write_scripted_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def machines(tmp_path: Path, pg_url: str) -> list[tuple[Path, dict[str, str]]]:
    """Two clones of one bare repository, each initialised with its own GROVE_HOME on the
    shared database: ``(clone, environment)`` per machine."""
    seed = tmp_path / "seed"
    init_repo(seed, {"README.md": "# shared\n"})
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--bare", "-q", str(seed), str(bare))
    found = []
    for name in ("m1", "m2"):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(bare), str(clone))
        write_scripted_config(clone, delay_s=0.05, lease_s=5)
        env = {"GROVE_DB_URL": pg_url, "GROVE_HOME": str(tmp_path / f"{name}-home")}
        done = run_cli("init", cwd=clone, env=env)
        assert done.returncode == 0, done.stderr
        found.append((clone, env))
    return found


def _agents(clone: Path, env: dict[str, str]) -> list[dict[str, object]]:
    listed = run_cli("ls", "--json", cwd=clone, env=env)
    assert listed.returncode == 0, listed.stderr
    agents: list[dict[str, object]] = json.loads(listed.stdout)
    return agents


@pytest.mark.postgres
def test_a_worker_with_roles_runs_only_those_roles_and_records_its_host(
    machines: list[tuple[Path, dict[str, str]]],
) -> None:
    (m1, env1), (m2, env2) = machines
    writers, testers = [], []
    for i in range(2):
        for role, ids, (clone, env) in (
            ("file-writer", writers, machines[0]),
            ("tester", testers, machines[1]),
        ):
            spawned = run_cli("spawn", role, f"task {i}", cwd=clone, env=env)
            assert spawned.returncode == 0, spawned.stderr
            ids.append(spawned.stdout.strip().split()[0])

    # Run from elsewhere against clone 1: --repo loads its grove.toml (scripted runtime).
    worker = run_cli(
        "worker", "--roles", "file-writer", "--drain", "--repo", str(m1), cwd=m2.parent, env=env1
    )
    assert worker.returncode == 0, worker.stderr

    by_id = {a["id"]: a for a in _agents(m2, env2)}  # the other machine sees the same database
    for agent_id in writers:
        assert by_id[agent_id]["status"] == "completed"
        assert by_id[agent_id]["host"] == socket.gethostname()
    for agent_id in testers:
        assert by_id[agent_id]["status"] == "pending"
        assert by_id[agent_id]["host"] is None

    table = run_cli("ls", cwd=m2, env=env2)
    header, *rows = table.stdout.splitlines()
    assert "host" in header.split()
    completed = [row for row in rows if " completed " in f" {row} "]
    assert len(completed) == 2
    assert all(socket.gethostname() in row for row in completed)
    shown = run_cli("show", writers[0], cwd=m2, env=env2)
    assert any(
        line.split()[:2] == ["host", socket.gethostname()] for line in shown.stdout.splitlines()
    )


@pytest.mark.postgres
def test_print_systemd_unit_names_the_executable_the_repo_and_the_options(
    machines: list[tuple[Path, dict[str, str]]], tmp_path: Path
) -> None:
    (m1, env1), _ = machines
    grove = Path(GROVE[0]).with_name("grove")  # the console script beside this Python
    result = subprocess.run(
        [str(grove), "worker", "--roles", "tester,file-writer", "--concurrency", "3",
         "--print-systemd-unit"],
        cwd=m1, env={**_env(), **env1}, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    unit = result.stdout.splitlines()
    exec_start = next(line for line in unit if line.startswith("ExecStart="))
    assert exec_start == (
        f"ExecStart={grove.resolve()} worker --roles file-writer,tester --concurrency 3"
    )
    assert f"WorkingDirectory={m1}" in unit
    assert "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
    stop = int(next(line for line in unit if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert stop > 0  # grace_s = 0 in this grove.toml: the margin alone
    # % is a systemd specifier: the URL's %3D is written %%3D so systemd passes it as given.
    db_line = next(line for line in unit if "GROVE_DB_URL=" in line)
    assert env1["GROVE_DB_URL"].replace("%", "%%") in db_line
    # Nothing written: no unit file, no database touched for an unknown clone's options.
    assert not (tmp_path / "grove-worker.service").exists()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--roles", "nosuch"], "--roles: unknown role 'nosuch'; known roles: "),
        (["--repo", "/nonexistent"], "--repo /nonexistent: no such directory"),
        (["--roles", " , "], "--roles: give one or more role names"),
    ],
)
def test_bad_worker_options_are_one_line_and_exit_2(repo: Path, args: list[str], says: str) -> None:
    # Refused before the database is opened: no grove init needed.
    result = run_cli("worker", *args, cwd=repo, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_repo_that_is_not_a_clone_is_refused(tmp_path: Path) -> None:
    plain_dir = tmp_path / "not-a-repo"
    plain_dir.mkdir()
    result = run_cli("worker", "--repo", str(plain_dir), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a git repository" in lines[0], result.stderr


def _quick_start() -> str:
    """The fenced shell block under docs/deploy.md's "Quick start" heading."""
    text = (Path(__file__).parents[1] / "docs" / "deploy.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.postgres
def test_the_deploy_quick_start_runs_as_written(pg_url: str, tmp_path: Path) -> None:
    import os

    bin_dir = str(Path(GROVE[0]).parent)  # the grove console script of this environment
    env = {
        **os.environ,
        "GROVE_DB_URL": pg_url,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
           for what, value in (("NAME", "Test"), ("EMAIL", "test@example.com"))},
    }  # fmt: skip
    env.pop("GROVE_HOME", None)
    result = subprocess.run(
        ["bash", "-c", _quick_start()],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " completed " in f" {line} "]
    assert len(rows) == 2, result.stdout
    assert all(socket.gethostname() in row for row in rows)
    assert {row.split()[1] for row in rows} == {"file-writer", "tester"}


@pytest.mark.usefixtures("database")
def test_claim_with_roles_passes_over_other_roles_with_and_without_admission(repo: Path) -> None:
    import time

    from agentgrove.admission import AdmissionGate
    from agentgrove.grove import Grove
    from agentgrove.runtime import ScriptedRuntime

    # per_role makes the gate exclude a role, so the gated statement set is used too.
    (repo / "grove.toml").write_text("[admission]\nper_role = {reviewer = 1}\n")
    with Grove.init(repo, runtime=ScriptedRuntime()) as g:
        gate = AdmissionGate(g.config.admission, g.service.pacer, time.time)
        tester = g.spawn("tester", "t").id
        writer = g.spawn("file-writer", "w").id
        reviewers = [g.spawn("reviewer", f"r{i}").id for i in range(2)]
        assert g.store.claim("w1", 60, roles=["nosuch"]) is None
        first = g.store.claim("w1", 60, roles=["file-writer", "reviewer"])
        assert first is not None and first.id == writer  # the older tester is passed over
        second = g.store.claim("w1", 60, roles=["reviewer"], gate=gate)
        assert second is not None and second.id == reviewers[0]
        # reviewer is at its limit: the gated, role-restricted claim finds nothing.
        assert g.store.claim("w1", 60, roles=["reviewer"], gate=gate) is None
        assert g.store.claim("w1", 60, roles=["reviewer"], agent_id=tester) is None
        assert g.get(tester).status.value == "pending"
        assert g.store.count_by_status(["reviewer"]) == {
            AgentStatus.EXECUTING: 1,
            AgentStatus.PENDING: 1,
        }
