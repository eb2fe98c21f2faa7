"""The dashboard in a real browser (Debian's Chromium through Playwright) while a workflow runs
in a real `grove worker` process, through the real SDK and CLI, against the scripted model
server: node states change on the page without a reload, and an agent's transcript shows its
tool call. With GROVE_SCREENSHOT_TO set, the run page's screenshot is also written there (that
is how docs/dashboard.png is made)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, read_file, say, write_file
from tests.conftest import GROVE, need, run_cli

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _chromium() -> None:
    need("Chromium", os.access(CHROMIUM, os.X_OK), "apt-get install chromium")


WORKFLOW = """
name: greeting-feature
description: design, build and test a greeting, then review it
inputs: [name]
nodes:
  - key: design
    role: spec-writer
    task: "Write SPEC.md for a greeting of {{ inputs.name }}"
  - key: implement
    role: implementer
    depends_on: [design]
    task: "Implement SPEC.md in greet.py"
  - key: test
    role: tester
    depends_on: [design]
    task: "Write test_greet.py from SPEC.md"
  - key: review
    role: reviewer
    depends_on: [implement, test]
    task: "Review greet.py and test_greet.py"
"""


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:g} s")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(gate: threading.Event) -> Script:
    def held_design(request: ModelRequest) -> Turn:
        # The design node's first model turn waits for the test: the page is open by then, so
        # every later state change has to reach it live.
        assert gate.wait(timeout=180), "the test never released the design node"
        return write_file("SPEC.md", "# SPEC\n\ngreet(name) returns 'Hello, name!'\n")

    return (
        Script()
        .on(role="spec-writer", turns=[held_design, say("SPEC.md written")])
        .on(
            role="implementer",
            turns=[
                write_file("greet.py", "def greet(name):\n    return f'Hello, {name}!'\n"),
                say("greet.py implements SPEC.md"),
            ],
        )
        .on(
            role="tester",
            turns=[
                write_file(
                    "test_greet.py",
                    "from greet import greet\n\n\ndef test_greet():\n"
                    "    assert greet('Ada') == 'Hello, Ada!'\n",
                ),
                say("test_greet.py covers SPEC.md"),
            ],
        )
        .on(role="reviewer", turns=[read_file("SPEC.md"), say("Looks good: matches SPEC.md")])
    )


@pytest.fixture
def dashboard(repo: Path) -> Iterator[str]:
    """`grove dashboard` as a process on a free port; its base URL once it answers."""
    assert run_cli("init", cwd=repo).returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [*GROVE, "dashboard", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, process.communicate()[1]
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _until(answers, 60, "the dashboard answering")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def _status(page: Page, node: str) -> str | None:
    return page.get_attribute(f'g.node[data-node-key="{node}"]', "data-status")


def test_run_page_updates_live_and_shows_a_transcript(
    repo: Path, tmp_path: Path, dashboard: str
) -> None:
    workflow = tmp_path / "greeting.yaml"
    workflow.write_text(WORKFLOW)
    started = run_cli("workflow", "run", str(workflow), "--input", "name=Ada", cwd=repo)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    gate = threading.Event()

    with ModelServer(_script(gate)) as server:
        worker = subprocess.Popen(
            [*GROVE, "worker", "--drain"],
            cwd=repo,
            env={**os.environ, **server.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                    ],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(f"{dashboard}/runs/{run_id}")
                page.wait_for_selector('#live[data-state="open"]', timeout=30_000)
                page.evaluate("window.groveMarker = 'same page'")
                before = {key: _status(page, key) for key in ("design", "implement", "review")}
                assert before["design"] in ("pending", "executing")
                assert before["implement"] == before["review"] == "waiting"
                # The worker claims the held node while we watch.
                try:
                    page.wait_for_selector(
                        'g.node[data-node-key="design"][data-status="executing"]',
                        timeout=120_000,
                    )
                except Exception as exc:  # say what the worker and the database saw
                    worker.send_signal(signal.SIGTERM)
                    _, err = worker.communicate(timeout=120)
                    listing = run_cli("ls", cwd=repo)
                    raise AssertionError(
                        f"design never showed executing (page: {_status(page, 'design')}); "
                        f"grove ls: {listing.stdout}{listing.stderr}; "
                        f"worker exit {worker.returncode}: {err[-3000:]}"
                    ) from exc

                gate.set()
                page.wait_for_selector(
                    'g.node[data-node-key="review"][data-status="completed"]', timeout=240_000
                )
                assert page.evaluate("window.groveMarker") == "same page"  # never reloaded
                assert {key: _status(page, key) for key in before} == dict.fromkeys(
                    before, "completed"
                )
                run_badge = page.get_attribute(f'h1 [data-run-id="{run_id}"]', "data-status")
                assert run_badge == "completed"
                shot = tmp_path / "dashboard-run.png"
                page.screenshot(path=str(shot), full_page=True)
                if target := os.environ.get("GROVE_SCREENSHOT_TO"):
                    shutil.copyfile(shot, target)

                # The node links to its agent: the transcript shows the Write call and result.
                page.click('g.node[data-node-key="design"]')
                page.wait_for_selector(".entry.tool .tool-name", timeout=30_000)
                assert "/agents/" in page.url
                tools = page.locator(".entry.tool .tool-name").all_inner_texts()
                assert "Write" in tools
                assert "SPEC.md" in page.locator(".entry.tool").first.inner_text()
                assert "+greet(name) returns" in page.locator("pre.diff").inner_text()
                page.screenshot(path=str(tmp_path / "dashboard-agent.png"), full_page=True)
                browser.close()
            worker.wait(timeout=120)
        finally:
            gate.set()
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            _, worker_err = worker.communicate(timeout=120)
        assert worker.returncode == 0, worker_err
        server.assert_done()
    assert (tmp_path / "dashboard-run.png").stat().st_size > 10_000
    assert (tmp_path / "dashboard-agent.png").stat().st_size > 10_000
