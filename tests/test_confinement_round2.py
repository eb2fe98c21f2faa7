"""Confinement, second round (issue 9 review): what a reviewer reproduced against the first
fixes. A sandboxed Bash rewrote refs and objects of the user's main ``.git``; read-only Bash
ran programs and wrote files through readers' options (``git grep -O``, ``sort
--compress-program``, ``--output``...); Read/Grep/Glob read other agents' worktrees, the
database and ``$HOME``; Bash read ``$HOME`` and other groves' homes. Each test here saw the
attack succeed before the fix."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import PermissionResultAllow, PermissionResultDeny

from agentgrove.gitexec import GitError
from agentgrove.runtime._cli_start import sandbox_settings as _sandbox_settings
from agentgrove.runtime._homes import demo_parent
from agentgrove.runtime._policy import bash_refusal, can_write
from agentgrove.runtime.claude import _can_use_tool, sandbox_available
from agentgrove.testing import ModelServer, Script, Turn, bash, read_file, tool_use, write_file
from agentgrove.workspaces import Workspaces, run_git
from tests.conftest import run_cli
from tests.test_confinement import _committed_files, _recording

needs_sandbox = pytest.mark.skipif(not sandbox_available(), reason="needs bubblewrap and socat")

# -- F2: the read-only policy is an allow-list of each reader's options ---------------------

BYPASSES = [
    "git grep -O'touch pwned' -e test",
    "git grep '-Osh -c \"id | tee pwned\"' -e test",
    "git grep --open-files-in-pager=touch -e test",
    "sort -S 16k -T . --compress-program=touch README.md",
    "sort --compress-program touch README.md",
    "sort -o f README.md",
    "sort -rof README.md",
    "sort --output=f README.md",
    "uniq README.md f",
    "find . -maxdepth 0 -fprintf f x",
    "find . -fprint0 f",
    "find . -fprint f",
    "find . -fls f",
    "find . -exec touch x ;",
    "find . -execdir touch x +",
    "find . -delete",
    "find . -ok rm {} +",
    "tree -o F",
    "tree -H . -R -o x",
    "rg --pre touch x",
    "rg --pre=touch x",
    "rg --pre-glob '*' --pre touch x",
    "rg -z x",
    "file -C -m f",
    "file -m magic x",
    "git log -1 --output=f",
    "git log -1 --output f",
    "git show --output=f",
    "git diff --output=f",
    "git show --ext-diff",
    "git log -p --ext-diff",
    "git diff --textconv",
    "git diff -Oorder",
    "git -c core.pager=touch log",
    "git -C /tmp log",
    "git --git-dir=/x log",
    "git --exec-path=/x log",
    "git -p log",
    "git --paginate log",
    "git branch pwned",
    "git branch -f main HEAD",
    "git branch -D main",
    "git branch -m main x",
    "git branch --set-upstream-to=x",
    "git branch -c main y",
    "git update-ref refs/heads/main HEAD",
    "git commit -m x",
    "git tag x",
    "git config core.pager touch",
    "git status --output=x",
    "touch x",
    "cat x > y",
    "ls; touch x",
    "echo $(touch x)",
    # bash expands what shlex takes literally: the words run are not the words checked
    "git log $'--output=/tmp/x'",
    "git log {--output=/tmp/x,-p}",
    "find . -name a $'-exec' touch /tmp/x {} +",
    "find . -name a {-exec,touch,/tmp/x,{},+}",
    "sort ${x:--o/tmp/x} a",
    "sort $'--compress-program=sh' a",
    "rg $'--pre=touch' hi",
    "sort *",
    "sort ./--c*",
    "sort ?-compress-program=sh",
    "sort [-]-compress-program=sh",
    "echo $'\\x3b' touch x",
    "sort \\--compress-program=sh a",
    'sort "$x" a',
    'sort "`echo -o/tmp/x`" a',
    "sort ~/x",
    "git log --format=%H !!",
    # an option whose value is optional never takes the next word (the tool reads it as an
    # option of its own)
    "git log --pretty --output=F -p",
    "git show --pretty --output=F",
    "git log -U --output=F -p",
    "git log --unified --output=F -p",
    "git diff -U --output=F",
    "git log --format --output=F",
    "git log --max-parents --output=F",
    "git log --min-parents --output=F",
    "git log --encoding --output=F",
    "uniq --group in OUT",
    "uniq --all-repeated in OUT",
    "sort --check --output=F a",
    "du --time --exclude-from=x .",
    "git describe --abbrev --output=F",
    "git status -u --output=F",
    "git blame --date --output=F README.md",
    "git shortlog --format --output=F",
]
READS = [
    "ls -la",
    "ls -1 src",
    "cat README.md",
    "cat -n README.md",
    "head -20 README.md",
    "head -n 5 README.md",
    "tail -n5 README.md",
    "wc -l README.md",
    "grep -rn TODO .",
    "grep -i -A3 test README.md",
    "grep --include='*.py' -rn def src",
    "grep -e 'a*b' -e \"x*\" README.md",
    "git log -U3 -p -1",
    "git log --pretty=oneline --unified=1 -1",
    "git log --pretty -1",
    "git status -uno",
    "uniq --group=append README.md",
    "sort --check=quiet README.md",
    "git describe --abbrev=4 --always",
    "rg -n test",
    "rg -i --hidden -g '*.md' test",
    "find . -name '*.py' -type f",
    "find . -maxdepth 2 -type d -print",
    "tree -L 2",
    "pwd",
    "stat README.md",
    "file README.md",
    "diff -u a b",
    "echo hello --output=x",
    "sort README.md",
    "sort -n -k2 README.md",
    "uniq -c README.md",
    "cut -d: -f1 README.md",
    "du -sh .",
    "git status",
    "git status --short",
    "git log --oneline -5",
    "git log -n 3 --stat",
    "git log --format=%H%x00%s -1",
    "git show HEAD",
    "git show --stat HEAD~1",
    "git diff",
    "git diff --cached --stat",
    "git diff HEAD~1 -- README.md",
    "git blame README.md",
    "git blame -L 1,5 README.md",
    "git branch",
    "git branch -a",
    "git branch -vv",
    "git branch --show-current",
    "git ls-files",
    "git grep -n test",
    "git grep -e test -- '*.md'",
    "git rev-parse HEAD",
    "git rev-parse --show-toplevel",
    "git describe --always",
    "git shortlog -sn",
    "git --no-pager log -1",
    "cat README.md | grep test | sort | uniq -c",
    "git log --oneline | head -3",
]


@pytest.mark.parametrize("command", BYPASSES)
def test_read_only_bash_refuses_every_writing_or_running_option(command: str) -> None:
    assert bash_refusal("read-only", command) is not None


@pytest.mark.parametrize("command", READS)
def test_read_only_bash_still_reads(command: str) -> None:
    assert bash_refusal("read-only", command) is None


def test_which_roles_can_write() -> None:
    assert can_write(["Read", "Bash"], "full")
    assert can_write(["Read", "Edit"], "read-only")
    assert not can_write(["Read", "Grep", "Glob", "Bash"], "read-only")
    assert not can_write(["Read", "Bash"], "none")


@pytest.mark.e2e
@needs_sandbox
def test_a_reviewers_readers_run_nothing_and_grove_commits_nothing(repo: Path) -> None:
    """``git grep -O`` ran a shell command, ``sort --compress-program`` ran touch (it needs a
    file big enough to spill to a temporary file); grove then committed what they wrote."""
    (repo / "README.md").write_text("# test repo\n" * 20000)
    run_git(["commit", "-qam", "big", "--no-verify"], repo, identity=("a", "a@b"))
    commands = [
        "git grep -O'touch pwned-grep' -e test",
        "sort -S 16k -T . --compress-program=touch " + " ".join(["README.md"] * 20),
    ]
    steps, seen = _recording([bash(c) for c in commands])
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(Script().on(role="reviewer", turns=steps)) as server:
        result = run_cli("run", "reviewer", "look", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    assert all("read-only role" in s for s in seen), seen
    worktree = Path(agent["workspace"]["path"])
    assert sorted(p.name for p in worktree.iterdir()) == [".git", "README.md"]
    assert _committed_files(repo, agent) == ["README.md"]  # the test's own commit, no more


def test_the_sandbox_makes_a_read_only_worktree_and_the_main_git_dir_unwritable(
    tmp_path: Path,
) -> None:
    worktree, git_dir, home = tmp_path / "wt", tmp_path / "repo" / ".git", tmp_path / "home"
    for path in (worktree, git_dir, home):
        path.mkdir(parents=True, exist_ok=True)
    (worktree / "README.md").write_text("x")
    (worktree / "src").mkdir(exist_ok=True)
    ro = _sandbox_settings(worktree, home, git_dir=git_dir, writable=False)["filesystem"]
    # every entry of the worktree (the CLI needs the folder itself to create its masks)
    assert ro["denyWrite"] == [str(worktree / "README.md"), str(worktree / "src"), str(git_dir)]
    rw = _sandbox_settings(worktree, home, git_dir=git_dir, writable=True)["filesystem"]
    assert rw["denyWrite"] == [str(git_dir)]
    assert str(home) in rw["denyRead"] and str(git_dir) in rw["allowRead"]


# -- F1: sandboxed Bash cannot touch the main .git ------------------------------------------

_REF_ATTACK = [
    "echo hi > agentfile && git add agentfile && git commit -qm agent "
    "&& git update-ref refs/heads/main HEAD && echo MAIN_MOVED",
    "git update-ref refs/heads/other-user-branch HEAD && echo BRANCH_MADE",
    "git branch victim-branch && echo VICTIM_MADE",
    "main=$(git rev-parse --path-format=absolute --git-common-dir) "
    "&& printf x >> $main/packed-refs && echo PACKED_APPENDED",
    "adm=$(git rev-parse --absolute-git-dir) && echo ref: refs/heads/main > $adm/HEAD "
    "&& echo HEAD_REPOINTED",
    "touch $(git rev-parse --path-format=absolute --git-common-dir)/objects/planted "
    "&& echo OBJECTS_WRITTEN",
]


def _refs(repo: Path) -> dict[str, Any]:
    git = repo / ".git"
    return {
        "refs": run_git(["for-each-ref", "--format=%(refname) %(objectname)"], repo),
        "packed": (git / "packed-refs").read_bytes(),
        "head": (git / "HEAD").read_bytes(),
        "planted": (git / "objects" / "planted").exists(),
    }


@pytest.mark.e2e
@needs_sandbox
def test_a_testers_bash_leaves_the_main_repository_unchanged(repo: Path) -> None:
    """Before: main moved to the agent's commit, branches were made in the user's repository,
    packed-refs took the byte (breaking the repository), the worktree's HEAD could be pointed
    at the user's main so that grove's own commit landed there."""
    run_git(["branch", "other-user-branch"], repo)
    run_git(["pack-refs", "--all"], repo)
    assert run_cli("init", cwd=repo).returncode == 0
    before = _refs(repo)
    steps, seen = _recording([bash(c) for c in _REF_ATTACK])
    with ModelServer(Script().on(role="tester", turns=steps)) as server:
        result = run_cli("run", "tester", "go", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    after = _refs(repo)
    grove_branch = agent["workspace"]["branch"]
    after["refs"] = "\n".join(
        line for line in after["refs"].splitlines() if not line.startswith("refs/heads/grove/")
    )
    assert after == before, seen
    for word in (
        "MAIN_MOVED",
        "BRANCH_MADE",
        "VICTIM_MADE",
        "PACKED_APPENDED",
        "HEAD_REPOINTED",
        "OBJECTS_WRITTEN",
    ):
        assert not any(word in s for s in seen), (word, seen)
    # grove committed the agent's file, on the agent's own branch
    assert "agentfile" in run_git(["show", "--name-only", grove_branch], repo)
    assert run_git(["rev-parse", "main"], repo) != run_git(["rev-parse", grove_branch], repo)


@pytest.mark.e2e
@needs_sandbox
def test_an_ordinary_agent_still_works_in_the_sandbox(repo: Path) -> None:
    commands = [
        "ls -la && cat README.md",
        "python3 -c 'print(6 * 7)'",
        "git status --short && git diff && git log --oneline -1 && echo GIT_OK",
        "echo made > made.txt && cat made.txt",
    ]
    turns: list[Any] = [write_file("written.txt", "by Write\n"), *map(bash, commands)]
    steps, seen = _recording(turns)
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(Script().on(role="tester", turns=steps)) as server:
        result = run_cli("run", "tester", "go", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    assert "# test repo" in seen[1] and "42" in seen[2], seen
    assert "GIT_OK" in seen[3] and "written.txt" in seen[3], seen
    assert "made" in seen[4], seen
    assert sorted(_committed_files(repo, agent)) == ["made.txt", "written.txt"]


# -- F3: Read, Grep, Glob (and every path-taking tool) stay in the worktree ------------------


def _decide(worktree: Path, name: str, tool_input: dict[str, Any]) -> bool:
    decision = _can_use_tool(worktree, [name], name, tool_input, "read-only")
    assert isinstance(decision, PermissionResultAllow | PermissionResultDeny)
    return isinstance(decision, PermissionResultAllow)


def test_readers_are_confined_to_the_worktree(tmp_path: Path) -> None:
    worktree = tmp_path / "home" / "worktrees" / "a1"
    other = tmp_path / "home" / "worktrees" / "b2"
    worktree.mkdir(parents=True)
    other.mkdir(parents=True)
    (worktree / "escape").symlink_to(other)
    outside = [
        ("Read", {"file_path": str(other / "notes.txt")}),
        ("Read", {"file_path": "../b2/notes.txt"}),
        ("Read", {"file_path": "escape/notes.txt"}),
        ("Read", {"file_path": "/root/.npmrc"}),
        ("NotebookRead", {"notebook_path": str(other / "n.ipynb")}),
        ("NotebookEdit", {"notebook_path": "../b2/n.ipynb"}),
        ("Grep", {"pattern": "x", "path": str(tmp_path / "home")}),
        ("Grep", {"pattern": "x", "path": "escape"}),
        ("Glob", {"pattern": "**/*", "path": str(tmp_path / "home")}),
        ("Glob", {"pattern": str(tmp_path / "home") + "/**/*"}),
        ("Glob", {"pattern": "../**/*"}),
        ("Glob", {"pattern": "src/../../b2/*"}),
        ("LS", {"path": "/"}),
    ]
    inside = [
        ("Read", {"file_path": str(worktree / "README.md")}),
        ("Read", {"file_path": "src/a.py"}),
        ("Grep", {"pattern": "x"}),
        ("Grep", {"pattern": "x", "path": "src"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("Glob", {"pattern": str(worktree) + "/**/*.py"}),
        ("Glob", {"pattern": "*", "path": str(worktree)}),
        ("LS", {"path": str(worktree)}),
    ]
    assert [call for call in outside if _decide(worktree, *call)] == []
    assert [call for call in inside if not _decide(worktree, *call)] == []


@pytest.mark.e2e
@pytest.mark.parametrize("role", ["reviewer", "file-writer"])
def test_read_grep_and_glob_see_nothing_of_other_agents_or_the_grove_home(
    repo: Path, role: str
) -> None:
    """Before: Read and Grep returned another agent's file, Glob listed the whole grove home
    (the CLI wrapper's folder, grove.db-wal) and Read returned the database's pages."""
    assert run_cli("init", cwd=repo).returncode == 0
    home = repo / ".grove"
    other = home / "worktrees" / "otheragent0001"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("OTHER-AGENT-PRIVATE-CONTENT\n")
    wal = home / "grove.db-wal"  # raw database pages; text enough for Read
    if not wal.exists():
        wal.write_text("DATABASE-PAGES\n")
    calls: list[Any] = [
        read_file(str(other / "notes.txt")),
        read_file(str(wal)),
        Turn([tool_use("Grep", {"pattern": "PRIVATE", "path": str(home)})]),
        Turn([tool_use("Glob", {"pattern": "**/*", "path": str(home)})]),
        Turn([tool_use("Glob", {"pattern": f"{home}/**/*"})]),
    ]
    if role == "reviewer":
        calls.append(Turn([tool_use("Grep", {"pattern": "PRIVATE", "path": "../otheragent0001"})]))
    steps, seen = _recording(calls)
    with ModelServer(Script().on(role=role, turns=steps)) as server:
        result = run_cli("run", role, "look", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    assert len(seen) == len(calls), seen
    refused = ("outside this agent's worktree", "No such tool available")  # file-writer: no Grep
    allowed = [s for s in seen if not any(r in s for r in refused)]
    assert allowed == [], allowed
    assert not any("PRIVATE" in s.replace("pattern", "") and "CONTENT" in s for s in seen)
    assert not any("DATABASE-PAGES" in s for s in seen)


# -- F5: sandboxed Bash reads nothing of $HOME or of other groves ---------------------------


@pytest.mark.e2e
@needs_sandbox
def test_bash_reads_nothing_of_home_or_of_a_demo_grove(repo: Path, tmp_path: Path) -> None:
    """Before: ``cat ~/.npmrc`` and another grove's ``/tmp/grove-demo-*/.grove/grove.db``
    were readable from a sandboxed Bash."""
    user_home = tmp_path / "userhome"
    user_home.mkdir()
    (user_home / ".npmrc").write_text("//registry/:_authToken=HOME-SECRET-TOKEN\n")
    demo = demo_parent() / f"grove-demo-test-{uuid.uuid4().hex[:8]}"
    (demo / ".grove").mkdir(parents=True)
    (demo / ".grove" / "grove.db").write_text("DEMO-GROVE-DATABASE\n")
    try:
        commands = [
            f"cat {user_home}/.npmrc",
            f"cat {demo}/.grove/grove.db",
            "ls -la && python3 -c 'print(6 * 7)'",
        ]
        steps, seen = _recording([bash(c) for c in commands])
        assert run_cli("init", cwd=repo).returncode == 0
        env = {"HOME": str(user_home)}
        with ModelServer(Script().on(role="tester", turns=steps)) as server:
            result = run_cli("run", "tester", "go", "--json", cwd=repo, env={**server.env(), **env})
        agent = json.loads(result.stdout)
        assert agent["status"] == "completed", result.stderr
        assert len(seen) == 3, seen
        assert "HOME-SECRET-TOKEN" not in seen[0], seen
        assert "DEMO-GROVE-DATABASE" not in seen[1], seen
        assert "README.md" in seen[2] and "42" in seen[2], seen
    finally:
        for path in sorted(demo.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        demo.rmdir()


def test_the_demo_parent_is_private(tmp_path: Path) -> None:
    parent = demo_parent()
    assert parent.stat().st_uid == os.getuid()
    assert parent.stat().st_mode & 0o077 == 0


# -- F1: grove's own commit lands only on the agent's branch --------------------------------


def test_grove_refuses_to_commit_through_a_head_pointed_at_the_users_branch(
    repo: Path, tmp_path: Path
) -> None:
    """Unconfined (sandbox = "off"), an agent could point its worktree's HEAD at the user's
    main: grove's commit then landed on main. It is refused now, and main stays."""
    workspaces = Workspaces(repo, tmp_path / "worktrees", repo)
    ws = workspaces.create("a1b2c3d4e5f6", None)
    worktree = Path(ws.worktree_path)
    admin = Path(run_git(["rev-parse", "--absolute-git-dir"], worktree))
    (admin / "HEAD").write_text("ref: refs/heads/main\n")
    (worktree / "agent.txt").write_text("agent work\n")
    main = run_git(["rev-parse", "main"], repo)
    with pytest.raises(GitError, match="not refs/heads/grove/"):
        workspaces.commit(ws, "agent: work", {"Grove-Agent": ws.agent_id})
    assert run_git(["rev-parse", "main"], repo) == main
