"""The CLI wrapper grove executes (with the worker's unfiltered environment) sits where only the
worker's user can write, is verified before every use, and is rewritten when it differs: a
script another local user planted is never run."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from agentgrove.runtime._environment import real_cli, wrapper_for
from agentgrove.testing import ModelServer, Script, say
from tests.conftest import run_cli


def _evil(marker: Path) -> str:
    return f'#!/bin/sh\ntouch {marker}\nexec {real_cli()} "$@"\n'


def _old_path() -> Path:
    """Where grove kept the wrapper before: a predictable name under $TMPDIR."""
    script = (
        "#!/bin/sh\n"
        "# agentgrove: run the Claude CLI with an allow-listed environment.\n"
        "set -f\n"
        'for name in $GROVE_CLI_DROP; do unset "$name"; done\n'
        "unset GROVE_CLI_DROP\n"
        f"exec '{real_cli()}' \"$@\"\n"
    )
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"agentgrove-{os.getuid()}" / f"claude-env-{digest}.sh"


def _plant(path: Path, content: str, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def _run_file_writer(repo: Path) -> dict[str, object]:
    script = Script().on(role="file-writer", turns=[say("nothing to write")])
    with ModelServer(script) as server:
        result = run_cli("run", "file-writer", "say hi", "--json", cwd=repo, env=server.env())
    agent: dict[str, object] = json.loads(result.stdout)
    return agent


@pytest.mark.e2e
def test_a_wrapper_planted_at_the_old_or_new_path_is_never_run(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "planted-wrapper-ran"
    old = _old_path()
    _plant(old, _evil(marker))
    try:
        assert run_cli("init", cwd=repo).returncode == 0
        # The new home of the wrapper, planted with the right name but other content, and
        # writable by anyone (as a careless umask or another tool might leave it).
        wrapper = wrapper_for(real_cli(), repo / ".grove")
        _plant(wrapper, _evil(marker), mode=0o777)
        agent = _run_file_writer(repo)
        assert agent["status"] == "completed", agent
        assert not marker.exists(), "grove ran a planted wrapper"
        assert wrapper.read_text() != _evil(marker)
        assert stat.S_IMODE(wrapper.stat().st_mode) & 0o022 == 0
    finally:
        old.unlink(missing_ok=True)


def test_the_wrapper_folder_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    wrapper = wrapper_for(real_cli(), home)
    folder = wrapper.parent
    assert folder.is_relative_to(home)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert folder.stat().st_uid == os.getuid() == wrapper.stat().st_uid
    # Asked again, the same verified file.
    assert wrapper_for(real_cli(), home) == wrapper


def test_a_wrapper_folder_writable_by_others_is_made_private_or_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = wrapper_for(real_cli(), home).parent
    folder.chmod(0o777)  # ours: tightened again before use
    wrapper_for(real_cli(), home)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # A parent that others may write to cannot be fixed by grove: refused, with what to do.
    home.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        wrapper_for(real_cli(), home)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand a folder to another user")
def test_a_wrapper_folder_owned_by_another_user_is_refused(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "planted-wrapper-ran"
    assert run_cli("init", cwd=repo).returncode == 0
    wrapper = wrapper_for(real_cli(), repo / ".grove")
    _plant(wrapper, _evil(marker))
    os.chown(wrapper, 65534, 65534)
    os.chown(wrapper.parent, 65534, 65534)  # nobody owns the folder and the planted file
    agent = _run_file_writer(repo)
    assert agent["status"] == "failed" and agent["error_kind"] == "permanent", agent
    assert "owned by" in str(agent["error"]) and "\n" not in str(agent["error"])
    assert not marker.exists(), "grove ran a wrapper another user owns"
