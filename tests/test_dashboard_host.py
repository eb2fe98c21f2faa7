"""The dashboard answers only requests that name it (DNS rebinding), and takes its token from
the environment or a file, so it need not show in ``ps``.

A web page the user visits can make the browser send requests to a name the page's owner
controls that resolves to 127.0.0.1; the browser then treats the dashboard's answers as that
site's own and lets the page read every transcript. The ``Host`` header still carries the
attacker's name: the dashboard refuses it with 400.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentgrove.dashboard._server import HostCheck
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from tests.conftest import GROVE

TOKEN = "a-long-dashboard-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def agent_id(repo: Path) -> str:
    with Grove.init(repo) as g:
        return g.spawn("tester", "secret plans for the dashboard").id


@pytest.fixture
def dashboard(repo: Path, agent_id: str) -> Iterator[Callable[..., tuple[int, int]]]:
    """Start ``grove dashboard`` with these arguments; (port, pid) once it answers."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[int, int]:
        import os

        port = _free_port()
        proc = subprocess.Popen(
            [*GROVE, "dashboard", "--port", str(port), *args],
            cwd=repo,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        _until(
            lambda: proc.poll() is not None or _answers(f"http://127.0.0.1:{port}/healthz"),
            "the dashboard to answer",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return port, proc.pid

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_request_for_another_name_is_refused(
    dashboard: Callable[..., tuple[int, int]], agent_id: str
) -> None:
    port, _ = dashboard()
    base = f"http://127.0.0.1:{port}"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        page = httpx.get(f"{base}/agents/{agent_id}", headers={"Host": host}, timeout=10)
        assert page.status_code == 200, host
        assert "secret plans" in page.text

    # A rebound name, another port, a name that only starts like ours, no port at all.
    for host in (
        f"attacker.example:{port}",
        "127.0.0.1:1",
        f"localhost.attacker.example:{port}",
        "localhost",
    ):
        page = httpx.get(f"{base}/agents/{agent_id}", headers={"Host": host}, timeout=10)
        assert page.status_code == 400, host
        assert "secret plans" not in page.text
        assert "is not this dashboard's address" in page.text
        stream = httpx.get(f"{base}/events/stream", headers={"Host": host}, timeout=10)
        assert stream.status_code == 400, host

    # HTTP/1.0 without any Host header.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"GET /agents/{agent_id} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"secret plans" not in answer


def test_the_token_comes_from_a_file_and_stays_out_of_ps(
    dashboard: Callable[..., tuple[int, int]], agent_id: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port, pid = dashboard("--token-file", str(token_file))
    assert TOKEN not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    url = f"http://127.0.0.1:{port}/agents/{agent_id}/cancel"
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
    done = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert done.status_code in (200, 303), done.text
    with Grove.open(tmp_path / "repo") as g:
        assert g.get(agent_id).status is AgentStatus.CANCELLED


def test_the_token_comes_from_the_environment(
    dashboard: Callable[..., tuple[int, int]], agent_id: str
) -> None:
    port, pid = dashboard(env={"GROVE_DASHBOARD_TOKEN": TOKEN})
    assert TOKEN not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    url = f"http://127.0.0.1:{port}/agents/{agent_id}/cancel"
    done = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert done.status_code in (200, 303), done.text


def test_a_world_readable_token_file_is_refused(repo: Path, agent_id: str) -> None:
    from tests.conftest import run_cli
    from tests.test_bad_input import assert_refused

    token_file = repo.parent / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    proc = run_cli("dashboard", "--token-file", str(token_file), cwd=repo, timeout=60)
    assert_refused(proc, "is readable by every user: chmod 600")


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not reached")


@pytest.mark.parametrize(
    ("bound", "header", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8420", True),
        ("127.0.0.1", "LOCALHOST:8420", True),
        ("127.0.0.1", "[::1]:8420", True),
        ("127.0.0.1", "127.0.0.1:8421", False),
        ("127.0.0.1", "evil.example:8420", False),
        ("127.0.0.1", "127.0.0.1:8420:8420", False),
        ("127.0.0.1", "[::1:8420", False),
        ("::1", "[::1]:8420", True),
        ("0.0.0.0", "192.0.2.7:8420", True),  # an address literal cannot be rebound
        ("0.0.0.0", "[2001:db8::1]:8420", True),
        ("0.0.0.0", "evil.example:8420", False),
        ("192.0.2.7", "192.0.2.7:8420", True),
        ("192.0.2.7", "10.0.0.1:8420", False),
        ("192.0.2.7", "localhost:8420", False),
    ],
)
def test_which_host_headers_are_allowed(bound: str, header: str, allowed: bool) -> None:
    assert HostCheck(_app, bound, 8420).allows(header) is allowed
