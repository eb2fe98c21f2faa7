"""Scripts for the model server (`grove dev model-server --script FILE.yaml`, docs/scripting.md),
and what the server does without one: the real `grove` CLI, the real Claude Code CLI, real git.

The scripts for the built-in workflows are read out of docs/scripting.md and run through
`grove workflow run ... --wait`, so the documentation cannot drift from what grove does.
"""

from __future__ import annotations

import json
import re
import select
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentgrove.testing import ModelRequest, ModelServer, ScriptError, parse_script
from agentgrove.workflows import builtin_templates
from agentgrove.workspaces import init_repo
from tests.conftest import GROVE, run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "scripting.md"
_BLOCK = re.compile(r"```yaml\n# script for: (?P<command>[^\n]+)\n(?P<body>.*?)```", re.DOTALL)


def documented_scripts() -> dict[str, tuple[list[str], str]]:
    """Workflow name -> (the documented `grove workflow run` command, the script)."""
    found: dict[str, tuple[list[str], str]] = {}
    for block in _BLOCK.finditer(DOCS.read_text()):
        command = shlex.split(block["command"])
        assert command[:3] == ["grove", "workflow", "run"], command
        found[command[3]] = (command[1:], block["body"])
    return found


@dataclass
class Served:
    """What `grove dev model-server` printed on stderr and its exit status, once stopped."""

    stderr: str = ""
    returncode: int | None = None


@contextmanager
def model_server(cwd: Path, *args: str, served: Served | None = None) -> Iterator[dict[str, str]]:
    """`grove dev model-server --port 0 ARGS` in a subprocess; yields the environment its
    `export` line gives, stops it (SIGTERM) afterwards and fills in ``served``."""
    server = subprocess.Popen(
        [*GROVE, "dev", "model-server", "--port", "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 60)
        assert ready, "the model server never announced itself"
        # Both lines are printed together: the second may already sit in the pipe's buffer.
        lines = [server.stdout.readline(), server.stdout.readline()]
        assert lines[1].startswith("export "), lines
        yield dict(part.split("=", 1) for part in shlex.split(lines[1])[1:])
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
        if served is not None:
            served.stderr, served.returncode = stderr, server.returncode


def run_json(repo: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    shown = run_cli(*args, "--json", cwd=repo, env=env)
    assert shown.returncode == 0, shown.stderr
    value = json.loads(shown.stdout)
    assert isinstance(value, dict)
    return value


def file_on(repo: Path, ref: str, path: str) -> str:
    """The exact content of ``path`` at ``ref`` (``git`` of conftest strips it)."""
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


# --- the documented scripts, one per built-in workflow ----------------------------------------


def test_docs_have_a_script_for_every_builtin_workflow() -> None:
    assert sorted(documented_scripts()) == sorted(builtin_templates())


def _check_design_implement_test(repo: Path, run: dict[str, object], env: dict[str, str]) -> None:
    branch = str(run["result_branch"])
    assert "Hello, NAME!" in file_on(repo, branch, "SPEC.md")
    assert "Hello, {sys.argv[1]" in file_on(repo, branch, "greet.py")
    nodes = {n["key"]: n for n in run["nodes"]}  # type: ignore[attr-defined]
    # The tester's output is what the real Bash printed, filled in by {{ result[0] }}.
    assert nodes["test"]["output"] == "Ran python3 greet.py Grove: Hello, Grove!"


def _check_feature(repo: Path, run: dict[str, object], env: dict[str, str]) -> None:
    branch = str(run["result_branch"])
    for path in ("SPEC.md", "PLAN.md", "test_greet.py"):
        file_on(repo, branch, path)
    # The child wrote greet.py, wait_agents merged it into the planner's work, and the
    # implementer node edited it.
    assert file_on(repo, branch, "greet.py").startswith('"""Print a greeting."""\n\nimport sys\n')
    nodes = {n["key"]: n for n in run["nodes"]}  # type: ignore[attr-defined]
    said = re.fullmatch(
        r"Step 1: completed by agent (\w+)\. Step 2 remains\.", nodes["plan"]["output"]
    )
    assert said is not None, nodes["plan"]["output"]
    child = run_json(repo, env, "show", said[1])
    assert (child["role"], child["status"]) == ("implementer", "completed")
    assert child["parent_id"] == nodes["plan"]["agent_id"]
    assert nodes["test"]["output"] == "python3 test_greet.py: 1 test passed"


CHECKS = {"design-implement-test": _check_design_implement_test, "feature": _check_feature}


@pytest.mark.e2e
@pytest.mark.parametrize("workflow", sorted(builtin_templates()))
def test_documented_script_runs_the_builtin_workflow(
    workflow: str, repo: Path, tmp_path: Path
) -> None:
    command, body = documented_scripts()[workflow]
    script = tmp_path / f"{workflow}.yaml"
    script.write_text(body)
    assert run_cli("init", cwd=repo).returncode == 0
    served = Served()
    with model_server(repo, "--script", str(script), served=served) as env:
        ran = run_cli(*command, "--wait", cwd=repo, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        run_id = re.search(rf"{workflow} (\w{{12}}): completed", ran.stdout)
        assert run_id is not None, ran.stdout
        run = run_json(repo, env, "workflow", "show", run_id[1])
        assert run["status"] == "completed"
        CHECKS[workflow](repo, run, env)
    # Every turn of the script was served, and no request was unexpected.
    assert served.returncode == 0, served.stderr


@pytest.mark.e2e
def test_an_agent_no_entry_matches_fails_naming_the_script(repo: Path, tmp_path: Path) -> None:
    script = tmp_path / "writers.yaml"
    script.write_text(
        "entries:\n  - role: file-writer\n    turns: [Done.]\n"
        "  - role: planner\n    turns: [Planned.]\n"
    )
    assert run_cli("init", cwd=repo).returncode == 0
    served = Served()
    with model_server(repo, "--script", str(script), served=served) as env:
        ran = run_cli("run", "reviewer", "Review the README", cwd=repo, env=env)
        done = run_cli("run", "file-writer", "Say done", cwd=repo, env=env)
        error = str(run_json(repo, env, "show", ran.stderr.split()[0])["error"])
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "no rule or handler matched (role='reviewer'" in error
    assert error.endswith(f"; the script {script} has no entry or turn for it (docs/scripting.md)")
    assert done.returncode == 0, done.stderr
    # Stopped, the server reports what went wrong (the reviewer, the planner's entry that no
    # agent used) and exits 1: a script meant for a workflow that did not run as it says.
    assert served.returncode == 1, served.stderr
    *unexpected, unconsumed, summary = served.stderr.splitlines()
    assert unexpected, served.stderr  # the reviewer's request (and the CLI's retries of it)
    for line in unexpected:
        assert line.startswith("scripted model server: unexpected request #"), line
        assert "role='reviewer'" in line
    assert unconsumed == (
        "unconsumed: rule [entries[1] (role='planner')] turns[0] of 1: "
        "<computed by entries[1].turns[0]> never served"
    )
    assert re.fullmatch(
        rf"scripted model server: \d+ request\(s\) served, {len(unexpected) + 1} problem\(s\)",
        summary,
    )


# --- bad scripts ------------------------------------------------------------------------------

BAD_SCRIPT = """\
entries:
  - role: implementer
    turns:
      - read: a.py
        bash: ls
      - say: "{{ nope.id }}"
  - task: '('
    turns:
      - fault: {status: 200}
  - turns: []
  - role: tester
    wat: 1
    turns:
      - edit: {path: a.py, old: x}
        as: result
"""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            BAD_SCRIPT,
            [
                "entries[0].turns[0]: one tool call per turn (read, bash); list several under "
                "calls:",
                "entries[0].turns[1]: {{ nope.id }}: no earlier tool call is named 'nope' "
                "(names so far: none yet)",
                "entries[1].turns[0].fault.status: input should be greater than or equal to 400",
                "entries[1].task: bad regex '(': missing ), unterminated subpattern at position 0",
                "entries[2].turns: list should have at least 1 item after validation, not 0",
                "entries[3].wat: unknown key; see docs/scripting.md for the keys of an entry "
                "and a turn",
                "entries[3].turns[0].edit.new: field required",
            ],
            id="every-problem",
        ),
        pytest.param(
            "entries:\n  - task: '('\n    turns: [hi]\n  - turns: [{say: '{{ result }}'}]\n",
            [
                "entries[0].task: bad regex '(': missing ), unterminated subpattern at position 0",
                "entries[1].turns[0]: {{ result }}: write result[N], N the number of the tool "
                "call from 0",
            ],
            id="regex-and-template",
        ),
        pytest.param("entries: [\n", None, id="not-yaml"),
        pytest.param("- role: x\n", [": a script is a mapping"], id="not-a-mapping"),
    ],
)
def test_a_bad_script_lists_every_problem_one_line_each_exit_2(
    content: str, expected: list[str] | None, repo: Path, tmp_path: Path
) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text(content)
    result = run_cli("dev", "model-server", "--port", "0", "--script", str(script), cwd=repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert all(line.startswith(f"grove: error: {script}") for line in lines), lines
    if expected is None:
        assert len(lines) == 1 and "not valid YAML at line" in lines[0], lines
        return
    got = [line.removeprefix(f"grove: error: {script}: ") for line in lines]
    if expected[0].startswith(":"):
        assert len(lines) == 1 and expected[0] in lines[0], lines
        return
    assert got == expected


def test_a_missing_script_is_one_line_exit_2(repo: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("dev", "model-server", "--port", "0", "--script", str(missing), cwd=repo)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"grove: error: script {missing}: no such file; give the path of a YAML script "
        "(docs/scripting.md)"
    ]


# --- the format through the real CLI ----------------------------------------------------------

FORMAT_SCRIPT = r"""
entries:
  - role: implementer
    task: '^Copy'
    turns:
      - fault: {status: 529}    # the CLI retries; the retry gets the next turn
      - calls:
          - read: a.txt
            as: a
          - bash: 'echo agent={{ agent }}'
        usage: {input_tokens: 1000, output_tokens: 200}
      - write: {path: '{{ task ~ /to (\S+)/ }}', content: '{{ a ~ /(alpha \d+)/ }}'}
        delay: 0.2
      - 'Copied {{ a ~ /alpha (\d+)/ }} to {{ task ~ /to (\S+)/ }}; {{ result[1] }}'
"""


@pytest.mark.e2e
def test_faults_usage_calls_delay_and_templates_reach_the_real_cli(tmp_path: Path) -> None:
    repo = tmp_path / "copy"
    init_repo(repo, {"a.txt": "alpha 42\n"})
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(parse_script(FORMAT_SCRIPT)) as server:
        env = server.env()
        ran = run_cli("run", "implementer", "Copy a.txt to b.txt", cwd=repo, env=env)
        server.assert_done()
        requests = server.requests
    assert ran.returncode == 0, ran.stdout + ran.stderr
    agent = run_json(repo, env, "show", ran.stderr.split()[0])
    assert file_on(repo, f"grove/{agent['id']}", "b.txt") == "alpha 42"
    # The usage figures: 1000 in / 200 out for the scripted turn, 120 / 30 for the other two.
    assert (agent["tokens_in"], agent["tokens_out"]) == (1240, 260)
    # result[1] is what the real Bash printed, {{ agent }} the agent's id.
    assert agent["output"] == f"Copied 42 to b.txt; agent={agent['id']}"
    assert [r.turn_index for r in requests] == [0, 0, 1, 2]  # the 529, then its retry


def test_a_template_that_cannot_be_filled_fails_the_turn_with_its_place() -> None:
    script = parse_script(
        "entries:\n  - turns:\n      - read: a.txt\n        as: a\n      - say: '{{ a.id }}'\n"
    )
    body = {
        "system": "agentgrove-role: x\n",
        "messages": [
            {"role": "user", "content": "task"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "plain"}],
            },
        ],
    }
    resolution = script.resolve(ModelRequest.from_body(body))
    assert resolution.reply is None
    assert resolution.error is not None
    assert "entries[0].turns[1]: {{ a.id }}: the result of Read is not JSON: 'plain'" in (
        resolution.error
    )


def test_parse_script_raises_script_error_with_every_problem() -> None:
    with pytest.raises(ScriptError) as raised:
        parse_script("entries:\n  - turns: [{}]\n  - turns: [{read: 3}]\n")
    assert raised.value.problems == (
        "script: entries[0].turns[0]: a turn needs say, a tool call (read, write, edit, bash, "
        "tool, spawn_agent, wait_agents, merge_agent, agent_result), calls or fault",
        "script: entries[1].turns[0].read: input should be a valid string",
    )
    assert str(raised.value).endswith("(and 1 more problem)")


# --- without a script: the default never lies ------------------------------------------------


@pytest.mark.e2e
def test_without_a_script_create_reads_an_existing_file_then_replaces_it(tmp_path: Path) -> None:
    repo = tmp_path / "existing"
    init_repo(repo, {"README.md": "# r\n", "hello.txt": "old\n"})
    assert run_cli("init", cwd=repo).returncode == 0
    with model_server(repo) as env:
        made = run_cli("run", "file-writer", "Create hello.txt containing hi", cwd=repo, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "Replaced hello.txt" in made.stdout
    agent_id = made.stderr.split()[0]
    assert file_on(repo, f"grove/{agent_id}", "hello.txt") == "hi\n"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("role", "task"),
    [
        ("reviewer", "Review the README"),
        # The demo's tester behaviour belongs to `grove demo` only.
        ("tester", "Run python3 greet.py Grove and report PASS or FAIL"),
    ],
)
def test_without_a_script_a_task_it_has_no_behaviour_for_fails_naming_script(
    role: str, task: str, repo: Path
) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    with model_server(repo) as env:
        ran = run_cli("run", role, task, cwd=repo, env=env)
        shown = run_json(repo, env, "show", ran.stderr.split()[0])
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert shown["status"] == "failed"
    error = str(shown["error"])
    assert "the scripted model has no behaviour for this task" in error, error
    assert "grove dev model-server --script FILE.yaml" in error


# --- templates, on hand-made requests (pure) --------------------------------------------------


def _request(task: str, results: list[str]) -> ModelRequest:
    """A request whose history holds one tool call per result, in order."""
    messages: list[dict[str, object]] = [{"role": "user", "content": task}]
    for number, result in enumerate(results):
        call = {"type": "tool_use", "id": f"t{number}", "name": "Bash", "input": {}}
        messages.append({"role": "assistant", "content": [call]})
        answer = {"type": "tool_result", "tool_use_id": f"t{number}", "content": result}
        messages.append({"role": "user", "content": [answer]})
    body = {"system": "agentgrove-role: planner\nagentgrove-agent: a1\n", "messages": messages}
    return ModelRequest.from_body(body)


def _served(turns_yaml: str, request: ModelRequest) -> list[dict[str, object]]:
    """The content blocks the script's turn for ``request`` serves."""
    resolution = parse_script(f"entries:\n  - turns:\n{turns_yaml}").resolve(request)
    assert resolution.reply is not None, resolution.error
    return list(resolution.reply.blocks)  # type: ignore[union-attr]


def test_templates_fill_in_json_values_regex_captures_and_literals() -> None:
    turns = (
        "      - bash: a\n        as: listed\n"
        "      - bash: b\n"
        "      - calls:\n"
        "          - wait_agents: {ids: '{{ listed.ids }}'}\n"
        '          - bash: "echo {{ result[-1] }} {{ task ~ /step (\\\\d+)/ }} {{ role }}"\n'
        '        say: "{{ \'{{\' }} {{ listed ~ /\\"ids\\"/ }} {{ agent }}"\n'
    )
    request = _request("do step 7", ['{"ids": ["x1", "x2"]}', "second"])
    said, wait, bash = _served(turns, request)
    assert said["text"] == '{{ "ids" a1'
    assert wait["input"] == {"ids": ["x1", "x2"]}  # a whole-string template keeps its list
    assert bash["input"] == {"command": "echo second 7 planner"}


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ result[5] }}", "the conversation has 1 tool call(s), no call 5"),
        ("{{ result[0].id }}", "the result of Bash is not JSON: 'plain'"),
        ("{{ result[0] ~ /nope/ }}", "/nope/ does not match 'plain'"),
    ],
)
def test_a_template_that_has_no_value_names_its_turn(template: str, problem: str) -> None:
    script = parse_script(f"entries:\n  - turns:\n      - bash: a\n      - say: '{template}'\n")
    resolution = script.resolve(_request("t", ["plain"]))
    assert resolution.reply is None and resolution.error is not None
    assert f"script: entries[0].turns[1]: {template}: {problem}" in resolution.error


@pytest.mark.e2e
def test_a_check_fix_round_is_served_the_entrys_next_turns(repo: Path) -> None:
    """As docs/scripting.md says: a failing check's fix round continues the conversation."""
    (repo / "one.yaml").write_text(
        "name: one\nnodes:\n  - key: build\n    role: implementer\n"
        "    check: test -f ok.txt\n    task: Build it\n"
    )
    script = parse_script(
        "entries:\n  - role: implementer\n    turns:\n"
        "      - write: {path: a.txt, content: a}\n      - say: first round\n"
        "      - write: {path: ok.txt, content: ok}\n      - say: fixed\n"
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        ran = run_cli("workflow", "run", "one.yaml", "--wait", cwd=repo, env=server.env())
        server.assert_done()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    branch = re.search(r"result: (grove/run/\w+)", ran.stdout)
    assert branch is not None, ran.stdout
    assert file_on(repo, branch[1], "ok.txt") == "ok"
