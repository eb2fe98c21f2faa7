"""Workflow specs: the YAML format, every validation error, inputs, task templates, and the pure
DAG decisions (ready, blocked, status, downstream) the engine relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgrove import workflows
from agentgrove.errors import BadInput
from agentgrove.roles import BUILTIN_ROLES
from agentgrove.workflows import (
    DepResult,
    NodeState,
    TaskTemplateError,
    WorkflowError,
    WorkflowSpec,
    blocked_by_failure,
    builtin_templates,
    check_template,
    downstream,
    find_workflow,
    load_workflow,
    parse_input_args,
    ready_nodes,
    render_task,
    resolve_inputs,
    run_status,
    topological_order,
)
from agentgrove.workflows.templates import Reference
from tests.conftest import run_cli

ROLES = sorted(BUILTIN_ROLES)

EXAMPLE = """\
name: design-implement-test
description: optional
inputs:
  feature: {description: "what to build", required: true}
  language: {default: python}
nodes:
  - key: design
    role: spec-writer
    task: "Write SPEC.md for {{ inputs.feature }} in {{ inputs.language }}."
  - key: implement
    role: implementer
    depends_on: [design]
    task: |
      Implement SPEC.md. The designer said: {{ design.output }}
    model: claude-haiku-4-5      # optional override
    timeout_s: 600               # optional override
    max_attempts: 2              # optional override
  - key: test
    role: tester
    depends_on: [implement]
    task: "Test it. Files changed: {{ implement.files_changed | join(', ') }}"
"""


def node(key: str, *deps: str, task: str = "do it", role: str = "tester") -> dict[str, Any]:
    return {"key": key, "role": role, "task": task, "depends_on": list(deps)}


def workflow(*nodes: dict[str, Any], inputs: Any = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "wf", "nodes": list(nodes), **extra}
    if inputs is not None:
        data["inputs"] = inputs
    return data


def graph(edges: dict[str, list[str]]) -> WorkflowSpec:
    """A spec whose nodes (in dict order) depend on the listed keys."""
    return load_workflow(workflow(*(node(k, *deps) for k, deps in edges.items())), roles=ROLES)


def load_error(source: str | Path | dict[str, Any], **kw: Any) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load_workflow(source, roles=kw.pop("roles", ROLES), **kw)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, BadInput)
    return info.value


# --- the format --------------------------------------------------------------------------


def test_the_documented_example_loads_from_text_path_and_dict(tmp_path: Path) -> None:
    spec = load_workflow(EXAMPLE, roles=ROLES)
    assert spec.name == "design-implement-test"
    assert spec.description == "optional"
    assert spec.keys == ("design", "implement", "test")
    assert spec.inputs["feature"].required
    assert spec.inputs["feature"].description == "what to build"
    assert not spec.inputs["language"].required
    assert spec.inputs["language"].default == "python"
    implement = spec.node("implement")
    assert implement.depends_on == ("design",)
    assert (implement.model, implement.timeout_s, implement.max_attempts) == (
        "claude-haiku-4-5",
        600.0,
        2,
    )
    design = spec.node("design")
    assert (design.model, design.timeout_s, design.max_attempts, design.depends_on) == (
        None,
        None,
        None,
        (),
    )

    path = tmp_path / "wf.yaml"
    path.write_text(EXAMPLE)
    assert load_workflow(path, roles=ROLES) == spec
    assert load_workflow(str(path), roles=ROLES) == spec
    assert load_workflow(yaml.safe_load(EXAMPLE), roles=ROLES) == spec


def test_inputs_may_be_a_list_of_required_names() -> None:
    spec = load_workflow(
        workflow(node("a", task="{{ inputs.x }} {{ inputs.y }}"), inputs=["x", "y"]), roles=ROLES
    )
    assert list(spec.inputs) == ["x", "y"]
    assert all(i.required and i.default is None for i in spec.inputs.values())


def test_input_required_defaults_to_having_no_default() -> None:
    inputs = {"a": None, "b": {"default": "1"}, "c": {"required": False}, "d": {"default": 3}}
    spec = load_workflow(workflow(node("n"), inputs=inputs), roles=ROLES)
    assert [spec.inputs[k].required for k in "abcd"] == [True, False, False, False]
    assert spec.inputs["d"].default == "3"


def test_to_json_round_trips_and_is_json() -> None:
    spec = load_workflow(EXAMPLE, roles=ROLES)
    data = json.loads(json.dumps(spec.to_json()))
    assert WorkflowSpec.from_json(data) == spec
    assert data["nodes"][1]["depends_on"] == ["design"]


def test_from_json_checks_the_graph_but_not_the_roles() -> None:
    data = load_workflow(EXAMPLE, roles=ROLES).to_json()
    data["nodes"][0]["role"] = "retired-role"
    assert WorkflowSpec.from_json(data).node("design").role == "retired-role"
    data["nodes"][0]["depends_on"] = ["test"]
    with pytest.raises(WorkflowError, match=r"stored workflow 'design-implement-test': cycle: "):
        WorkflowSpec.from_json(data)


def test_node_lookup_names_the_known_keys() -> None:
    spec = load_workflow(EXAMPLE, roles=ROLES)
    with pytest.raises(WorkflowError, match=r"has no node 'deploy' \(nodes: design, implement"):
        spec.node("deploy")


# --- built-in workflows ------------------------------------------------------------------


def test_builtin_workflows_are_listed_and_load_with_the_builtin_roles() -> None:
    builtins = builtin_templates()
    assert list(builtins) == ["design-implement-test", "feature"]
    for name, path in builtins.items():
        spec = load_workflow(path, roles=BUILTIN_ROLES)
        assert spec.name == name
        assert find_workflow(name) == path


def test_design_implement_test_passes_the_design_on() -> None:
    spec = load_workflow(find_workflow("design-implement-test"), roles=BUILTIN_ROLES)
    assert [(n.key, n.role) for n in spec.nodes] == [
        ("design", "spec-writer"),
        ("implement", "implementer"),
        ("test", "tester"),
    ]
    assert list(spec.inputs) == ["feature", "check"]
    assert topological_order(spec) == ["design", "implement", "test"]
    inputs = resolve_inputs(spec, {"feature": "a calculator"})
    implement = render_task(
        spec.node("implement").task, inputs, {"design": DepResult(output="DESIGN-SUMMARY")}
    )
    assert "DESIGN-SUMMARY" in implement
    assert "a calculator" in implement
    test = render_task(
        spec.node("test").task,
        inputs,
        {"implement": DepResult(output="done", files_changed=("calc.py", "cli.py"))},
    )
    assert "calc.py, cli.py" in test


def test_feature_workflow_chains_five_roles_and_lets_the_planner_fan_out() -> None:
    spec = load_workflow(find_workflow("feature"), roles=BUILTIN_ROLES)
    assert [(n.key, n.role) for n in spec.nodes] == [
        ("spec", "spec-writer"),
        ("plan", "planner"),
        ("implement", "implementer"),
        ("test", "tester"),
        ("review", "reviewer"),
    ]
    assert topological_order(spec) == ["spec", "plan", "implement", "test", "review"]
    plan = spec.node("plan").task
    assert "spawn_agent" in plan
    assert "wait_agents" in plan
    deps = {k: DepResult(output=f"{k}-out", files_changed=(f"{k}.py",)) for k in spec.keys}
    inputs = resolve_inputs(spec, {"feature": "search"})
    for n in spec.nodes:
        text = render_task(n.task, inputs, {d: deps[d] for d in n.depends_on})
        for dep in n.depends_on:
            assert f"{dep}-out" in text or f"{dep}.py" in text


def test_find_workflow_prefers_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text(EXAMPLE)
    assert find_workflow(path) == path
    assert find_workflow(str(path)) == path


def test_find_workflow_names_the_builtins_when_nothing_matches(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as info:
        find_workflow(str(tmp_path / "nope.yaml"))
    assert "not a file" in str(info.value)
    assert "design-implement-test, feature" in str(info.value)
    with pytest.raises(WorkflowError, match=r"no workflow 'deploy'"):
        find_workflow("deploy")


def test_workflows_public_names_are_sorted_and_importable() -> None:
    assert workflows.__all__ == sorted(workflows.__all__)
    for name in workflows.__all__:
        assert getattr(workflows, name) is not None


# --- validation errors -------------------------------------------------------------------

T = "{{ inputs.x }}"

# (case id, workflow, substrings the one-line message must contain, node it names)
INVALID: list[tuple[str, Any, list[str], str | None]] = [
    ("yaml-syntax", "name: x\nnodes: [\n", ["not valid YAML at line 3"], None),
    ("yaml-tab", "name: x\n\tnodes: []\n", ["not valid YAML at line 2"], None),
    (
        "yaml-duplicate-key",
        "name: x\nname: y\nnodes: []\n",
        ["line 2", "duplicate key 'name'"],
        None,
    ),
    ("not-a-mapping", "- a\n- b\n", ["expected a mapping", "got list"], None),
    ("scalar", "just words", ["got str", "if you meant a file"], None),
    ("missing-name", {"nodes": [node("a")]}, ["workflow: name: field required"], None),
    ("missing-nodes", {"name": "wf"}, ["workflow 'wf': nodes: field required"], None),
    ("empty-nodes", workflow(), ["workflow 'wf': the workflow has no nodes"], None),
    ("null-nodes", {"name": "wf", "nodes": None}, ["nodes: input should be a valid tuple"], None),
    (
        "top-level-extra",
        workflow(node("a"), nodez=[]),
        ["nodez: unknown field; use one of name, description, inputs, nodes"],
        None,
    ),
    (
        "missing-role",
        workflow(node("a"), {"key": "b", "task": "t"}),
        ["nodes[1].role (node 'b'): field required"],
        "b",
    ),
    (
        "missing-key",
        workflow({"role": "tester", "task": "t"}),
        ["nodes[0].key: field required"],
        None,
    ),
    (
        "node-extra-field",
        workflow({**node("a"), "dependson": ["b"]}),
        ["nodes[0].dependson (node 'a'): unknown field; use one of key, role, task, depends_on"],
        "a",
    ),
    (
        "role-wrong-type",
        workflow({**node("a"), "role": 3}),
        ["nodes[0].role (node 'a'): input should be a valid string"],
        "a",
    ),
    (
        "timeout-not-positive",
        workflow({**node("a"), "timeout_s": 0}),
        ["nodes[0].timeout_s (node 'a'): input should be greater than 0"],
        "a",
    ),
    (
        "timeout-not-number",
        workflow({**node("a"), "timeout_s": "soon"}),
        ["nodes[0].timeout_s (node 'a')"],
        "a",
    ),
    (
        "max-attempts-zero",
        workflow({**node("a"), "max_attempts": 0}),
        ["nodes[0].max_attempts (node 'a')"],
        "a",
    ),
    (
        "depends-on-a-string",
        workflow(node("a"), {**node("b"), "depends_on": "a"}),
        ["nodes[1].depends_on (node 'b'): input should be a valid tuple"],
        "b",
    ),
    ("empty-task", workflow(node("a", task="")), ["nodes[0].task (node 'a')"], "a"),
    ("nodes-not-mappings", {"name": "wf", "nodes": ["a"]}, ["nodes[0]: input should be"], None),
    (
        "input-extra-field",
        workflow(node("a"), inputs={"x": {"default": "1", "help": "h"}}),
        ["inputs.x.help: unknown field; use one of description, required, default"],
        None,
    ),
    (
        "input-required-with-default",
        workflow(node("a"), inputs={"x": {"required": True, "default": "1"}}),
        ["inputs.x: an input with a default cannot be required"],
        None,
    ),
    (
        "input-list-not-names",
        workflow(node("a"), inputs=["x", 3]),
        ["inputs: the list must hold input names, not 3"],
        None,
    ),
    ("input-list-duplicate", workflow(node("a"), inputs=["x", "x"]), ["'x' is listed twice"], None),
    (
        "input-name-invalid",
        workflow(node("a"), inputs=["foo-bar"]),
        ["input name 'foo-bar' is invalid"],
        None,
    ),
    (
        "duplicate-key",
        workflow(node("a"), node("b"), node("a")),
        ["duplicate node key 'a' (nodes[0] and nodes[2])"],
        "a",
    ),
    ("reserved-key", workflow(node("inputs")), ["node key 'inputs' is reserved"], "inputs"),
    (
        "keys-collide-in-templates",
        workflow(node("run-tests"), node("run_tests")),
        ["node keys 'run-tests' and 'run_tests' are both 'run_tests' in templates"],
        "run_tests",
    ),
    (
        "unknown-role",
        workflow(node("a"), node("b", role="deployer")),
        ["node 'b': unknown role 'deployer' (known: file-writer, implementer, integrator, planner"],
        "b",
    ),
    (
        "unknown-dependency",
        workflow(node("a"), node("b", "z")),
        ["node 'b' depends on unknown node 'z' (nodes: a, b)"],
        "b",
    ),
    ("self-dependency", workflow(node("a", "a")), ["node 'a' depends on itself"], "a"),
    (
        "dependency-listed-twice",
        workflow(node("a"), node("b", "a", "a")),
        ["node 'b' lists 'a' twice in depends_on"],
        "b",
    ),
    ("cycle-of-two", workflow(node("a", "b"), node("b", "a")), ["cycle: a -> b -> a"], "a"),
    (
        "cycle-of-three",
        workflow(node("a", "c"), node("b", "a"), node("c", "b")),
        ["cycle: a -> c -> b -> a (each node depends on the next)"],
        "a",
    ),
    (
        "cycle-away-from-the-start",
        workflow(node("root"), node("x", "root", "z"), node("y", "x"), node("z", "y")),
        ["cycle: x -> z -> y -> x"],
        "x",
    ),
    (
        "template-syntax",
        workflow(node("a", task="{{ inputs.x ")),
        ["node 'a' task: template syntax error on line 1"],
        "a",
    ),
    (
        "template-unclosed-block",
        workflow(node("a", task="line\n{% if true %}x")),
        ["node 'a' task: template syntax error on line 2"],
        "a",
    ),
    (
        "template-include",
        workflow(node("a", task="{% include 'other.txt' %}")),
        ["node 'a' task: line 1: {% include %} is not supported"],
        "a",
    ),
    (
        "template-unknown-input",
        workflow(node("a", task="{{ inputs.featrue }}"), inputs=["feature"]),
        ["node 'a' template uses unknown input 'inputs.featrue' (declared: feature)"],
        "a",
    ),
    (
        "template-input-without-inputs",
        workflow(node("a", task=T)),
        ["uses unknown input 'inputs.x' (declared: none)"],
        "a",
    ),
    (
        "template-bare-inputs",
        workflow(node("a", task="{{ inputs }}"), inputs=["x"]),
        ["node 'a' template uses 'inputs' without an input name"],
        "a",
    ),
    (
        "template-computed-input",
        workflow(node("a", task="{{ inputs[name] }}"), inputs=["x"]),
        ["node 'a' template uses 'inputs' without an input name"],
        "a",
    ),
    (
        "template-unknown-dep-field",
        workflow(node("a"), node("b", "a", task="{{ a.outptu }}")),
        ["node 'b' template uses unknown field 'a.outptu' (fields: branch, files_changed"],
        "b",
    ),
    (
        "template-bare-dep",
        workflow(node("a"), node("b", "a", task="{{ a }}")),
        ["node 'b' template uses 'a' without a field"],
        "b",
    ),
    (
        "template-transitive-ancestor",
        workflow(
            node("design"),
            node("implement", "design"),
            node("test", "implement", task="{{ design.output }}"),
        ),
        ["node 'test' template uses 'design.output' but does not depend on 'design'"],
        "test",
    ),
    (
        "template-sibling",
        workflow(node("a"), node("b", task="{{ a['branch'] }}")),
        ["node 'b' template uses 'a.branch' but does not depend on 'a'"],
        "b",
    ),
    (
        "template-later-node",
        workflow(node("a", task="{{ b.output }}"), node("b")),
        ["node 'a' template uses 'b.output' but does not depend on 'b'"],
        "a",
    ),
    (
        "template-own-result",
        workflow(node("a", task="{{ a.output }}")),
        ["node 'a' template uses its own result 'a.output'"],
        "a",
    ),
    (
        "template-unknown-name",
        workflow(node("a", task="line one\n{{ feature }}"), inputs=["feature"]),
        ["node 'a' template uses unknown name 'feature' on line 2"],
        "a",
    ),
    (
        "template-hyphenated-key-written-with-hyphen",
        workflow(node("run-tests"), node("b", "run-tests", task="{{ run-tests.output }}")),
        ["uses unknown name 'run'", "to use node 'run-tests', write run_tests.FIELD"],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("source", "expected", "node_key"),
    [pytest.param(source, expected, key, id=case) for case, source, expected, key in INVALID],
)
def test_invalid_workflow_is_refused_in_one_line(
    source: Any, expected: list[str], node_key: str | None
) -> None:
    error = load_error(source)
    for part in expected:
        assert part in str(error)
    assert error.node == node_key


@pytest.mark.parametrize("key", ["Design", "1st", "has space", "a.b", "_a", "-a", "ä", ""])
def test_invalid_node_keys_are_refused(key: str) -> None:
    error = load_error(workflow(node("ok"), node(key)))
    assert f"nodes[1]: node key {key!r} is invalid" in str(error)
    assert "lowercase letters, digits, '-' and '_'" in str(error)


@pytest.mark.parametrize("key", ["a", "design", "run-tests", "step_2", "a-b_c9"])
def test_valid_node_keys_are_accepted(key: str) -> None:
    assert load_workflow(workflow(node(key)), roles=ROLES).keys == (key,)


def test_errors_in_a_file_start_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnodes:\n  - key: a\n    role: ghost\n    task: t\n")
    assert str(load_error(path)).startswith(f"{path}: node 'a': unknown role 'ghost'")
    assert str(load_error(str(path))).startswith(f"{path}: ")
    assert str(load_error(path, origin="mine")).startswith("mine: node 'a'")


def test_a_missing_file_is_named() -> None:
    assert str(load_error("does/not/exist.yaml")) == (
        "no workflow file at does/not/exist.yaml; check the path"
    )


def test_roles_are_checked_against_the_given_collection() -> None:
    data = workflow(node("a", role="deployer"))
    assert load_workflow(data, roles={"deployer"}).node("a").role == "deployer"
    assert "(known: tester)" in str(load_error(data, roles=["tester"]))


# --- templates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        "plain text, no template",
        "{{ inputs.x }} and {{ inputs['x'] }}",
        "{{ a.output | upper }} {{ a.files_changed | join(', ') }}",
        "{{ a.branch }} {{ a.head_commit }} {{ a.output ~ inputs.x }}",
        "{% for f in a.files_changed %}{{ loop.index }}: {{ f }}\n{% endfor %}",
        "{% set n = a.files_changed | length %}{{ n }} files",
        "{% if a.branch %}on {{ a.branch }}{% else %}no branch{% endif %}",
        "{% for i in range(3) %}{{ i }}{% endfor %}",
        "{% macro item(x) %}- {{ x }}{% endmacro %}{{ item(inputs.x) }}",
        "{{ a.files_changed[0] if a.files_changed else 'none' }}",
        "{{ run_tests.output }}",
    ],
)
def test_valid_templates_are_accepted(task: str) -> None:
    data = workflow(node("a"), node("run-tests"), node("b", "a", "run-tests", task=task))
    data["inputs"] = ["x"]
    assert load_workflow(data, roles=ROLES).node("b").task == task


def test_check_template_reports_unknown_references_once_in_order() -> None:
    text = "{{ b.x }}\n{{ a }} {{ inputs.nope }}\n{{ a }}{{ free }}{% set local = 1 %}{{ local }}"
    unknown = check_template(text, {"inputs": {"ok"}, "b": None})
    assert unknown == [
        Reference("a", None, 2),
        Reference("inputs", "nope", 2),
        Reference("free", None, 3),
    ]
    assert [str(r) for r in unknown] == ["a", "inputs.nope", "free"]


def test_check_template_raises_on_bad_syntax() -> None:
    with pytest.raises(TaskTemplateError, match=r"^template syntax error on line 1: "):
        check_template("{% for %}", {})


def test_render_task_fills_inputs_and_dependency_results() -> None:
    text = (
        "Build {{ inputs.feature }}.\n"
        "{% if design.files_changed %}\n"
        "Files: {{ design.files_changed | join(', ') }}\n"
        "{% endif %}\n"
        "Branch: [{{ design.branch }}] <{{ run_tests.output }}> & done\n"
    )
    deps = {
        "design": DepResult(output="spec", files_changed=("a.py", "b.py")),
        "run-tests": DepResult(output="<ok>"),
    }
    assert render_task(text, {"feature": "x"}, deps) == (
        "Build x.\nFiles: a.py, b.py\nBranch: [] <<ok>> & done\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ inputs.missing }}", "cannot render task template: 'dict object' has no attribute"),
        ("{{ design.output }}", "cannot render task template: 'design' is undefined"),
        ("{{ inputs.__class__ }}", "cannot render task template: access to attribute"),
        ("{{ 1 / 0 }}", "cannot render task template: ZeroDivisionError"),
    ],
)
def test_render_task_errors_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(TaskTemplateError) as info:
        render_task(text, {"x": "1"}, {})
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


# --- inputs ------------------------------------------------------------------------------


def test_resolve_inputs_applies_defaults_in_declaration_order() -> None:
    spec = load_workflow(EXAMPLE, roles=ROLES)
    assert resolve_inputs(spec, {"feature": "f"}) == {"feature": "f", "language": "python"}
    resolved = resolve_inputs(spec, {"language": "go", "feature": "f"})
    assert list(resolved.items()) == [("feature", "f"), ("language", "go")]


def test_an_optional_input_without_default_is_empty() -> None:
    spec = load_workflow(workflow(node("a"), inputs={"note": {"required": False}}), roles=ROLES)
    assert resolve_inputs(spec, {}) == {"note": ""}


@pytest.mark.parametrize(
    ("inputs", "given", "message"),
    [
        (
            ["a", "b"],
            {"a": "1", "b": "2", "c": "3"},
            "unknown input 'c'; workflow 'wf' takes: a, b",
        ),
        (None, {"c": "3"}, "unknown input 'c'; workflow 'wf' takes no inputs"),
        (
            ["a", "b"],
            {"b": "2"},
            "missing required input 'a' for workflow 'wf'; give inputs={'a': ...}",
        ),
        (
            ["a", "b"],
            {},
            "missing required inputs 'a', 'b' for workflow 'wf'; give inputs={'a': ..., 'b': ...}",
        ),
    ],
)
def test_resolve_inputs_errors(inputs: Any, given: dict[str, str], message: str) -> None:
    spec = load_workflow(workflow(node("a"), inputs=inputs), roles=ROLES)
    with pytest.raises(BadInput) as info:
        resolve_inputs(spec, given)
    assert str(info.value) == message


def test_parse_input_args() -> None:
    assert parse_input_args(["a=1", "b=x=y", "c=", " d =v "]) == {
        "a": "1",
        "b": "x=y",
        "c": "",
        "d": "v ",
    }
    assert parse_input_args([]) == {}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["feature"], "--input 'feature': expected NAME=VALUE"),
        (["=value"], "--input '=value': the name before '=' is empty; use NAME=VALUE"),
        (["a=1", "a=2"], "--input 'a' is given twice; give each input once"),
    ],
)
def test_parse_input_args_errors(pairs: list[str], message: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_input_args(pairs)
    assert str(info.value) == message


# --- the DAG -----------------------------------------------------------------------------

CHAIN = {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]}
DIAMOND = {"top": [], "left": ["top"], "right": ["top"], "bottom": ["left", "right"]}
FAN = {
    "root": [],
    **{f"w{i}": ["root"] for i in range(6)},
    "join": [f"w{i}" for i in range(6)],
}

S = NodeState


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        (CHAIN, ["a", "b", "c", "d"]),
        ({"d": ["c"], "c": ["b"], "b": ["a"], "a": []}, ["a", "b", "c", "d"]),
        (DIAMOND, ["top", "left", "right", "bottom"]),
        (
            {"bottom": ["left", "right"], "right": ["top"], "left": ["top"], "top": []},
            ["top", "right", "left", "bottom"],
        ),
        (FAN, ["root", "w0", "w1", "w2", "w3", "w4", "w5", "join"]),
        ({"x": [], "y": [], "z": ["y"]}, ["x", "y", "z"]),
    ],
)
def test_topological_order_breaks_ties_by_spec_order(
    edges: dict[str, list[str]], expected: list[str]
) -> None:
    assert topological_order(graph(edges)) == expected


@pytest.mark.parametrize(
    ("edges", "states", "ready"),
    [
        (CHAIN, {}, ["a"]),
        (CHAIN, {"a": S.PENDING}, []),
        (CHAIN, {"a": S.COMPLETED}, ["b"]),
        (CHAIN, {"a": S.COMPLETED, "b": S.WAITING}, ["b"]),
        (CHAIN, {"a": S.COMPLETED, "b": S.EXECUTING}, []),
        (CHAIN, {"a": S.FAILED}, []),
        (DIAMOND, {"top": S.COMPLETED}, ["left", "right"]),
        (DIAMOND, {"top": S.COMPLETED, "left": S.COMPLETED, "right": S.EXECUTING}, []),
        (DIAMOND, {"top": S.COMPLETED, "left": S.COMPLETED, "right": S.COMPLETED}, ["bottom"]),
        (FAN, {"root": S.COMPLETED}, [f"w{i}" for i in range(6)]),
        (FAN, {"root": S.COMPLETED, **{f"w{i}": S.COMPLETED for i in range(5)}}, ["w5"]),
        (FAN, {k: S.COMPLETED for k in FAN if k != "join"}, ["join"]),
        ({"x": [], "y": [], "z": ["x"]}, {}, ["x", "y"]),
    ],
)
def test_ready_nodes(
    edges: dict[str, list[str]], states: dict[str, NodeState], ready: list[str]
) -> None:
    assert ready_nodes(graph(edges), states) == ready


def test_ready_nodes_accepts_plain_strings() -> None:
    assert ready_nodes(graph(CHAIN), {"a": "completed"}) == ["b"]  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("edges", "states", "blocked"),
    [
        (CHAIN, {"a": S.FAILED}, ["b", "c", "d"]),
        (CHAIN, {"a": S.COMPLETED, "b": S.CANCELLED, "c": S.WAITING}, ["c", "d"]),
        (CHAIN, {"a": S.COMPLETED, "b": S.DEPENDENCY_FAILED}, ["c", "d"]),
        (CHAIN, {"a": S.EXECUTING}, []),
        (DIAMOND, {"top": S.COMPLETED, "left": S.FAILED, "right": S.EXECUTING}, ["bottom"]),
        (FAN, {"root": S.COMPLETED, "w3": S.FAILED}, ["join"]),
        (FAN, {"root": S.FAILED}, [*(f"w{i}" for i in range(6)), "join"]),
        ({"x": [], "y": [], "z": ["y"]}, {"x": S.FAILED}, []),
    ],
)
def test_blocked_by_failure_is_transitive(
    edges: dict[str, list[str]], states: dict[str, NodeState], blocked: list[str]
) -> None:
    assert blocked_by_failure(graph(edges), states) == blocked


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ({}, "running"),
        ({"top": S.PENDING}, "running"),
        ({"top": S.COMPLETED}, "running"),
        ({"top": S.COMPLETED, "left": S.COMPLETED, "right": S.COMPLETED}, "running"),
        ({k: S.COMPLETED for k in DIAMOND}, "completed"),
        ({"top": S.COMPLETED, "left": S.FAILED, "right": S.EXECUTING}, "running"),
        ({"top": S.COMPLETED, "left": S.FAILED, "right": S.COMPLETED}, "failed"),
        (
            {"top": S.COMPLETED, "left": S.FAILED, "right": S.CANCELLED},
            "failed",
        ),
        (
            {"top": S.COMPLETED, "left": S.CANCELLED, "right": S.COMPLETED, "bottom": S.WAITING},
            "cancelled",
        ),
        (
            {"top": S.CANCELLED, "left": S.DEPENDENCY_FAILED, "right": S.DEPENDENCY_FAILED},
            "cancelled",
        ),
        ({"top": S.COMPLETED, "left": S.DEPENDENCY_FAILED}, "failed"),
    ],
)
def test_run_status(states: dict[str, NodeState], status: str) -> None:
    assert run_status(graph(DIAMOND), states) == status


def test_run_status_fails_fast_without_starting_an_independent_branch() -> None:
    spec = graph({"x": [], "y": [], "z": ["y"]})
    states = {"x": S.FAILED, "y": S.COMPLETED}
    assert ready_nodes(spec, states) == ["z"]
    assert run_status(spec, states) == "failed"
    assert run_status(spec, {**states, "z": S.PENDING}) == "running"


@pytest.mark.parametrize(
    ("edges", "key", "expected"),
    [
        (CHAIN, "a", ["a", "b", "c", "d"]),
        (CHAIN, "c", ["c", "d"]),
        (DIAMOND, "top", ["top", "left", "right", "bottom"]),
        (DIAMOND, "right", ["right", "bottom"]),
        (FAN, "w2", ["w2", "join"]),
        ({"x": [], "y": [], "z": ["y"]}, "x", ["x"]),
    ],
)
def test_downstream(edges: dict[str, list[str]], key: str, expected: list[str]) -> None:
    assert downstream(graph(edges), key) == expected


def test_downstream_of_an_unknown_node() -> None:
    with pytest.raises(WorkflowError, match=r"workflow 'wf' has no node 'zz' \(nodes: a, b"):
        downstream(graph(CHAIN), "zz")


def test_an_unvalidated_cycle_is_refused_by_topological_order() -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "raw", "nodes": [node("a", "b", role="r"), node("b", "a", role="r")]}
    )
    with pytest.raises(WorkflowError, match=r"dependency cycle among a, b"):
        topological_order(spec)


# --- properties over random DAGs ---------------------------------------------------------


@st.composite
def random_dags(draw: st.DrawFn) -> WorkflowSpec:
    """A DAG of up to 12 nodes (node i may depend on any j < i), listed in a random order."""
    size = draw(st.integers(min_value=1, max_value=12))
    deps = [draw(st.sets(st.integers(0, i - 1))) if i else set() for i in range(size)]
    order = draw(st.permutations(range(size)))
    return graph({f"n{i}": [f"n{j}" for j in sorted(deps[i])] for i in order})


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_topological_order_respects_every_edge(spec: WorkflowSpec) -> None:
    order = topological_order(spec)
    assert sorted(order) == sorted(spec.keys)
    position = {key: i for i, key in enumerate(order)}
    for n in spec.nodes:
        for dep in n.depends_on:
            assert position[dep] < position[n.key]
        assert downstream(spec, n.key)[0] == n.key


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.data())
def test_completing_ready_nodes_completes_the_run(spec: WorkflowSpec, data: st.DataObject) -> None:
    states: dict[str, NodeState] = {}
    finished: list[str] = []
    for _ in range(2 * len(spec.nodes)):
        if run_status(spec, states) != "running":
            break
        for key in ready_nodes(spec, states):
            states[key] = S.PENDING
        active = sorted(k for k, s in states.items() if s.active)
        assert active, "a running run must have something in flight"
        for key in data.draw(st.sets(st.sampled_from(active), min_size=1)):
            states[key] = S.COMPLETED
            finished.append(key)
    assert run_status(spec, states) == "completed"
    position = {key: i for i, key in enumerate(finished)}
    for n in spec.nodes:
        assert all(position[dep] < position[n.key] for dep in n.depends_on)


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.data())
def test_a_failure_blocks_exactly_its_descendants_and_fails_the_run(
    spec: WorkflowSpec, data: st.DataObject
) -> None:
    failing = data.draw(st.sampled_from(spec.keys))
    states: dict[str, NodeState] = {}
    for _ in range(2 * len(spec.nodes) + 1):
        if run_status(spec, states) != "running":
            break
        for key in blocked_by_failure(spec, states):
            states[key] = S.DEPENDENCY_FAILED
        if not any(s.unsuccessful for s in states.values()):
            for key in ready_nodes(spec, states):
                states[key] = S.PENDING
        active = sorted(k for k, s in states.items() if s.active)
        if active:
            key = data.draw(st.sampled_from(active))
            states[key] = S.FAILED if key == failing else S.COMPLETED
    assert run_status(spec, states) == "failed"
    assert states[failing] == S.FAILED
    below = set(downstream(spec, failing)[1:])
    for key in spec.keys:
        if key in below:
            assert states.get(key) in (None, S.DEPENDENCY_FAILED)
        assert states.get(key) in (None, S.COMPLETED, S.FAILED, S.DEPENDENCY_FAILED)


def test_readmes_workflow_example_is_the_built_in_file() -> None:

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    real = builtin_templates()["design-implement-test"].read_text()
    assert f"```yaml\n{real}```" in readme


BAD_EVERYWHERE = """
name: bad
nodes:
  - {key: a, role: poet, task: "{{ inputs.x }}"}
  - {key: b, role: tester, depends_on: [zz], task: "ok"}
  - {key: b, role: tester, task: "ok"}
"""


def test_validate_lists_every_problem_and_run_names_the_first_and_counts_the_rest(
    repo: Path,
) -> None:
    (repo / "bad.yaml").write_text(BAD_EVERYWHERE)
    assert run_cli("init", cwd=repo).returncode == 0
    checked = run_cli("workflow", "validate", "bad.yaml", cwd=repo)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith("grove: error: bad.yaml: ") for line in lines)
    for said in (
        "duplicate node key 'b'",
        "unknown role 'poet'",
        "unknown node 'zz'",
        "unknown input 'inputs.x'",
    ):
        assert any(said in line for line in lines), (said, lines)
    started = run_cli("workflow", "run", "bad.yaml", cwd=repo)
    assert started.returncode == 2
    [line] = started.stderr.strip().splitlines()
    assert line == lines[0] + " (and 3 more problems)"
    assert run_cli("workflow", "ls", "--json", cwd=repo).stdout.strip() == "[]"


def test_templates_show_prints_the_built_in_yaml(repo: Path) -> None:

    shown = run_cli("workflow", "templates", "--show", "feature", cwd=repo)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == builtin_templates()["feature"].read_text()
    missing = run_cli("workflow", "templates", "--show", "nope", cwd=repo)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "grove: error: no built-in workflow 'nope'; the built-ins are: "
        "design-implement-test, feature"
    )
