"""Crash test: SIGKILL the worker right after a node's completion commits, before its
dependents start; a new worker finishes the run and no completed node runs twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.models import RunStatus
from agentgrove.store._faults import KILL_AFTER_ENV
from agentgrove.testing import ModelServer, Script, say, write_file
from tests.conftest import GROVE, run_cli

pytestmark = pytest.mark.e2e

CHAIN = """
name: two-steps
nodes:
  - {key: design, role: spec-writer, task: "Write SPEC.md"}
  - {key: build, role: implementer, task: "Build it. {{ design.output }}", depends_on: [design]}
"""


def test_sigkill_after_a_node_completes_loses_nothing_and_repeats_nothing(repo: Path) -> None:
    (repo / "two-steps.yaml").write_text(CHAIN)
    script = (
        Script()
        .on(role="spec-writer", turns=[write_file("SPEC.md", "spec\n"), say("spec written")])
        .on(role="implementer", turns=[write_file("app.py", "print(1)\n"), say("built")])
    )
    assert run_cli("init", cwd=repo).returncode == 0
    started = run_cli("workflow", "run", "two-steps.yaml", "--json", cwd=repo)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]
    with ModelServer(script) as server:
        env = {**os.environ, **server.env(), KILL_AFTER_ENV: "agent.completed"}
        crashed = subprocess.run(
            [*GROVE, "worker", "--drain"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        with Grove.open(repo) as grove:
            mid = grove.store.get_run(run_id)
        # The completion and the dependent's creation committed together, before the kill.
        assert [n.state for n in mid.nodes] == ["completed", "pending"]

        env.pop(KILL_AFTER_ENV)
        again = subprocess.run(
            [*GROVE, "worker", "--drain"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        server.assert_done()  # every scripted turn served exactly as planned
        spec_writer_requests = [r for r in server.requests if r.role == "spec-writer"]
    with Grove.open(repo) as grove:
        final = grove.store.get_run(run_id)
        design = final.nodes[0].agent
        assert design is not None
        claims = [e for e in grove.store.events(agent_id=design.id) if e.kind == "agent.claimed"]
    assert final.status is RunStatus.COMPLETED
    assert len(claims) == 1 and design.attempt == 1
    assert len(spec_writer_requests) == 2  # its two turns, once each: it never ran again
