"""Recovery on one host: an agent whose worker process on this host is gone is reclaimed at the
next sweep (the first one comes as a worker starts), without waiting for its lease to expire;
a live process's lease, and a lease of another host, keep the lease rule."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.worker import new_owner_id, owner_gone
from tests.conftest import GROVE, wait_until, write_scripted_config

LEASE_S = 600.0  # under the lease rule alone, the agent would come back after ten minutes


def _configure(repo: Path, delay_s: float) -> None:
    write_scripted_config(repo, delay_s=delay_s, lease_s=LEASE_S)


_until = wait_until


def _worker(repo: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GROVE, "worker", *args],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _owner_process() -> tuple[subprocess.Popen[str], str]:
    """Another live process of this host, and the lease owner id it would claim with."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from agentgrove.worker import new_owner_id; "
            "print(new_owner_id(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@pytest.mark.e2e
def test_kill_9_on_this_host_is_reclaimed_before_the_lease_expires(
    repo: Path, database: str
) -> None:
    _configure(repo, delay_s=3)
    with Grove.init(repo) as grove:
        agent = grove.spawn("tester", "survive a crash")
        first = _worker(repo)
        _until(lambda: len(grove.store.transcript(agent.id)) > 0)  # mid-run
        held = grove.store.get_agent(agent.id)
        assert held.status is AgentStatus.EXECUTING and held.lease_expires_at is not None
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        # Under the lease rule alone this worker would wait ten minutes: the test times out.
        second = _worker(repo, "--drain")
        _, err = second.communicate(timeout=120)
        final = grove.store.get_agent(agent.id)
        events = grove.store.events(agent_id=agent.id)
    assert second.returncode == 0, err
    assert final.status is AgentStatus.COMPLETED and final.attempt == 2
    assert "attempt 2" in (final.output or "")
    reclaimed = [e for e in events if e.kind == "agent.lease_expired"]
    assert len(reclaimed) == 1
    assert reclaimed[0].data == {"attempt": 1, "reason": "its worker process is gone"}
    # Completed while the first attempt's lease still ran.
    completed = [e for e in events if e.kind == "agent.completed"]
    assert len(completed) == 1 and completed[0].at < held.lease_expires_at


def test_a_live_process_or_another_host_keeps_its_lease(grove: Grove) -> None:
    live, live_owner = _owner_process()
    dead, dead_owner = _owner_process()
    dead.kill()
    dead.communicate(timeout=30)
    host, pid, identity, nonce = new_owner_id().rsplit(":", 3)
    boot, pid_ns, start = identity.split(".")
    owners = {
        "live": live_owner,
        "this worker": new_owner_id(),
        "another host": f"not-{host}:{pid}:{identity}:{nonce}",
        "an old owner id (no identity)": f"{host}:{dead_owner.split(':')[1]}:{nonce}",
        "dead": dead_owner,
        # Our own pid, but another process's start time: the pid was reused.
        "pid reused": f"{host}:{pid}:{boot}.{pid_ns}.{int(start) + 1}:{nonce}",
        "before the last boot": f"{host}:{pid}:{'0' * 12}.{pid_ns}.{start}:{nonce}",
    }
    try:
        assert {name: owner_gone(owner) for name, owner in owners.items()} == {
            "live": False,
            "this worker": False,
            "another host": False,
            "an old owner id (no identity)": False,
            "dead": True,
            "pid reused": True,
            "before the last boot": True,
        }
        ids = {}
        for name, owner in owners.items():
            spawned = grove.spawn("tester", f"held by {name}")
            claimed = grove.store.claim(owner, LEASE_S, agent_id=spawned.id)
            assert claimed is not None
            ids[name] = claimed.id
        swept = grove.store.sweep_expired(gone=owner_gone)
        assert sorted(swept) == sorted(
            ids[n] for n in ("dead", "pid reused", "before the last boot")
        )
        for name in ("live", "this worker", "another host", "an old owner id (no identity)"):
            row = grove.store.get_agent(ids[name])
            assert row.status is AgentStatus.EXECUTING and row.lease_owner == owners[name]
            assert row.lease_expires_at is not None and row.lease_expires_at > datetime.now(UTC)
        # The lease rule still holds for them: past their expiry, they are swept.
        late = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
        assert len(grove.store.sweep_expired(at=late, gone=owner_gone)) == 4
    finally:
        live.communicate("", timeout=30)


def test_the_owner_id_names_this_host_and_process() -> None:
    host, pid, identity, _ = new_owner_id().rsplit(":", 3)
    assert host == socket.gethostname() and pid == str(os.getpid())
    assert len(identity.split(".")) == 3
