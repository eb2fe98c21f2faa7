"""The inbox page in a real browser (Debian's Chromium through Playwright) while a workflow
runs in a real `grove worker` process, through the real SDK and CLI, against the scripted
model server: a node held at its `before` gate is approved from the page, the run moves on and
the page follows without a reload; the next node's `after` gate shows up on the page by
itself, is approved there too, and the run completes with both files on its branch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from agentgrove.testing import ModelServer, playground_script
from tests.conftest import GROVE, git, need, run_cli, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
TOKEN = "inbox-token"

WORKFLOW = """
name: gated-pair
nodes:
  - key: first
    role: file-writer
    task: "Create first.txt containing one"
    approval: before
  - key: second
    role: file-writer
    depends_on: [first]
    task: "Create second.txt containing two"
    approval: after
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_approve_from_the_inbox_and_the_run_moves_on_without_a_reload(
    repo: Path, tmp_path: Path
) -> None:
    need("Chromium", os.access(CHROMIUM, os.X_OK), "apt-get install chromium")
    assert run_cli("init", cwd=repo).returncode == 0
    flow = tmp_path / "gated.yaml"
    flow.write_text(WORKFLOW)
    started = run_cli("workflow", "run", str(flow), cwd=repo)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = subprocess.Popen(
        [*GROVE, "dashboard", "--port", str(port), "--token", TOKEN],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with ModelServer(playground_script()) as server:
        worker = subprocess.Popen(
            [*GROVE, "worker"],
            cwd=repo,
            env={**os.environ, **server.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def answers() -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(answers, timeout_s=60)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{base}/inbox")
                page.wait_for_selector('#live[data-state="open"]', timeout=30_000)
                page.evaluate("window.groveMarker = 'same page'")
                first = page.locator('.inbox-item[data-kind="approval"]')
                assert first.count() == 1
                assert server.requests == [], "nothing may reach the model before the approval"
                first.locator('form[action$="/approve"] input[name="token"]').fill(TOKEN)
                first.locator('form[action$="/approve"] button').click()
                # The first node runs and completes: its badge follows, on this same page.
                first.locator('.status[data-status="completed"]').wait_for(timeout=120_000)
                # The second ran and waits at its after gate: its item comes by itself.
                second = page.locator('.inbox-item[data-kind="approval"]').nth(1)
                second.wait_for(timeout=120_000)
                assert "review node second" in second.inner_text()
                second.locator('form[action$="/approve"] input[name="token"]').fill(TOKEN)
                second.locator('form[action$="/approve"] button').click()
                second.locator('.status[data-status="completed"]').wait_for(timeout=60_000)
                assert page.evaluate("window.groveMarker") == "same page"  # never reloaded
                browser.close()

            def completed() -> bool:
                shown = run_cli("workflow", "show", run_id, "--json", cwd=repo)
                return bool(json.loads(shown.stdout)["status"] == "completed")

            wait_until(completed, timeout_s=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
            dashboard.send_signal(signal.SIGTERM)
            dashboard.communicate(timeout=30)
    branch = f"grove/run/{run_id}"
    files = git(repo, "ls-tree", "--name-only", branch).split()
    assert {"first.txt", "second.txt"} <= set(files), files
