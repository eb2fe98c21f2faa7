"""The Python API end to end, offline: the scripted model server plays the model, the real
Claude Agent SDK and CLI do the work in a temporary git repository.

    .venv/bin/python examples/python_api.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agentgrove import Grove
from agentgrove.runtime.claude import ClaudeRuntime
from agentgrove.testing import ModelServer, Script, bash, say, write_file
from agentgrove.workspaces import init_repo


def main() -> None:
    repo = Path(tempfile.mkdtemp(prefix="grove-example-"))
    init_repo(repo, {"README.md": "# example\n"})
    script = (
        Script()
        .on(role="spec-writer", turns=[write_file("SPEC.md", "greet() says hi\n"), say("spec")])
        .on(role="implementer", turns=[write_file("greet.py", "print('hi')\n"), say("done")])
        .on(role="tester", turns=[bash("python3 greet.py"), say("it printed hi")])
    )
    with (
        ModelServer(script) as server,
        Grove.init(repo, runtime=ClaudeRuntime(env=server.env())) as grove,
    ):
        run = grove.run_workflow("design-implement-test", inputs={"feature": "a greeter"})
        for node in run.nodes:
            head = node.agent.workspace.head_commit if node.agent and node.agent.workspace else None
            print(f"{node.key:<10} {node.state:<10} {head}")
        print(f"run {run.id}: {run.status.value}, ${run.to_json()['cost_usd']:.4f}")
        server.assert_done()


if __name__ == "__main__":
    main()
