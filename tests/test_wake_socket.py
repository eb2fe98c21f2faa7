"""SQLite's wake-up across processes: a spawn in one process starts in a waiting worker at once."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.store._wake_socket import listen_for_pokes, poke, wake_dir
from tests.conftest import GROVE, wait_until


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("database")
def test_on_sqlite_a_spawn_elsewhere_wakes_a_waiting_worker_at_once(repo: Path) -> None:
    # The worker would poll only once a minute: only the wake-up of the spawn's commit can
    # start the agent before the deadline below.
    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\n\n[worker]\npoll_s = 60\n')
    with Grove.init(repo) as grove:
        assert grove.store.url.startswith("sqlite")
        worker = subprocess.Popen(
            [*GROVE, "worker"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            first = grove.spawn("tester", "picked up at start-up")
            wait_until(lambda: grove.get(first.id).status is AgentStatus.COMPLETED, timeout_s=30)
            second = grove.spawn("tester", "spawned while the worker waits")
            wait_until(lambda: grove.get(second.id).status is AgentStatus.COMPLETED, timeout_s=30)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    # The worker removed its socket on the way out.
    assert not list(wake_dir(grove.store.url.removeprefix("sqlite:///")).glob("*.sock"))


def test_a_poke_reaches_every_listener_and_a_dead_ones_socket_is_removed(tmp_path: Path) -> None:
    directory = wake_dir(str(tmp_path / "grove.db"))
    stop = threading.Event()
    woken = [threading.Event(), threading.Event()]
    listeners = [
        threading.Thread(target=listen_for_pokes, args=(directory, w.set, stop)) for w in woken
    ]
    for thread in listeners:
        thread.start()
    try:
        wait_until(lambda: len(list(directory.glob("*.sock"))) == 2, timeout_s=10)
        dead = directory / "999999-dead.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
            gone.bind(str(dead))  # bound, then closed: what a killed worker leaves
        poke(directory)
        for event in woken:
            assert event.wait(10)
        assert not dead.exists()
    finally:
        stop.set()
        for thread in listeners:
            thread.join(10)
    assert not list(directory.glob("*.sock"))


def test_a_directory_open_to_others_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another local user could bind sockets there or see who listens: workers poll instead.
    directory = wake_dir(str(tmp_path / "other.db"))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o777)
    stop = threading.Event()
    stop.set()
    with caplog.at_level(logging.WARNING, logger="agentgrove.private_dirs"):
        listen_for_pokes(directory, lambda: None, stop)  # returns at once, binds nothing
    assert not list(directory.glob("*.sock"))
    poke(directory)  # and never raises
    os.chmod(directory, 0o700)
    # Said once, naming the directory and the fallback.
    assert [r.getMessage() for r in caplog.records] == [
        f"wake-up sockets not used: {directory} is open to other users (mode 777, not 700); "
        "workers poll instead"
    ]


def test_a_directory_of_another_user_or_a_link_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agentgrove.private_dirs import refusal

    mine = tmp_path / "mine"
    assert refusal(mine, create=True) is None
    assert mine.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert refusal(link, create=True) == f"{link} is not a directory"
    if os.getuid() == 0:  # only root can give a directory away
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        assert refusal(theirs, create=True) == (
            f"{theirs} belongs to user 65534, not to this user (0)"
        )


def test_agents_cannot_read_the_workers_sockets(tmp_path: Path) -> None:
    # The Bash sandbox denies the wake-up directory: an agent cannot flood its workers.
    from agentgrove.runtime._homes import private_homes

    directory = wake_dir(str(tmp_path / "grove.db"))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    deny, _ = private_homes(tmp_path / "wt", None)
    assert str(directory.parent.resolve()) in deny
