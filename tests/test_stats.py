"""``grove stats``, ``grove_checks_total`` and the dashboard's check and cost views, on real
databases.

Agents run on the in-process scripted runtime with known usage; their check columns (which the
check runner fills in) are set in the database, as the runner would leave them. Every figure the
real ``grove`` CLI prints is recomputed here from the agent rows, not from the store's query.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from agentgrove.dashboard import create_app
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, CheckStatus, ErrorKind
from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.stats import PASSING
from agentgrove.store._schema import agents as agents_table
from tests.conftest import run_cli
from tests.test_hostile_text import ROLE, TERMINAL, assert_inert

SONNET = BUILTIN_ROLES["implementer"].model
HAIKU = BUILTIN_ROLES["file-writer"].model
OLD = datetime(2020, 3, 1, 12, 0, tzinfo=UTC)
"""When the agents marked ``old`` finished (set in the database)."""
HOSTILE_TAIL = "FAILED test_x <script>alert('tail')</script>\n\x1b[31mred\x1b[0m [bold]no[/bold]\n"


def _behaviour(spec: RunSpec) -> RunResult:
    """Usage read from the task ("n=<k>"), so every agent's figures differ; "fail" fails
    (having spent as much)."""
    n = int(spec.prompt.split("n=")[1].split()[0])
    failed = "fail" in spec.prompt
    return RunResult(
        success=not failed,
        output=None if failed else "ok",
        error="bad request" if failed else None,
        error_kind=ErrorKind.PERMANENT if failed else None,
        tokens_in=100 * n,
        tokens_out=10 * n,
        cost_usd=n / 100,
        duration_ms=n * 1000 + 7,
    )


@dataclass(frozen=True)
class Planned:
    role: str
    task: str
    model: str | None = None
    check: CheckStatus = CheckStatus.NONE
    old: bool = False


PLAN = (
    # implementer on sonnet: 2 passed, 1 check failed (fails check_failed), 1 unchecked; an even
    # count of durations, so the median is the mean of the middle two.
    Planned("implementer", "n=1", check=CheckStatus.PASSED),
    Planned("implementer", "n=2", check=CheckStatus.PASSED, old=True),
    Planned("implementer", "n=3", check=CheckStatus.FAILED),
    Planned("implementer", "n=4"),
    # the same role on another model
    Planned("implementer", "n=5", model="opus", check=CheckStatus.PASSED),
    # file-writer: none checked, so no cost per pass
    Planned("file-writer", "n=6"),
    Planned("file-writer", "n=7", old=True),
    # tester: a failed run, and one whose check passed but that failed afterwards (e.g. its
    # final commit refused, merge_conflict): not passed, since it did not complete
    Planned("tester", "fail n=8"),
    Planned("tester", "n=9", check=CheckStatus.PASSED),
)


def _check_columns(status: CheckStatus) -> dict[str, Any]:
    if status is CheckStatus.NONE:
        return {}
    passed = status is CheckStatus.PASSED
    return {
        "check_command": "pytest -q",
        "check_status": status.value,
        "check_rounds": 1 if passed else 3,
        "check_exit_code": 0 if passed else 1,
        "check_duration_ms": 1234,
        "check_output": "1 passed\n" if passed else HOSTILE_TAIL,
    }


@pytest.fixture
def populated(repo: Path, database: str) -> Iterator[Grove]:
    """A grove whose agents ran as :data:`PLAN` says, plus one cancelled before it ran and one
    still pending with a failed check round (neither ran; only the cancelled one finished)."""
    with Grove.init(repo, runtime=ScriptedRuntime(_behaviour)) as grove:
        spawned = [(p, grove.spawn(p.role, p.task, model=p.model)) for p in PLAN]
        anyio.run(grove.execute_async, [a.id for _, a in spawned])
        cancelled = grove.spawn("reviewer", "n=10")
        assert grove.store.cancel(cancelled.id)
        # Pending, with a red check from an earlier round (as between fix rounds: a retried
        # attempt goes back to pending): not counted anywhere until it finishes.
        between = grove.spawn("reviewer", "n=11")
        with grove.store.engine.begin() as conn:
            conn.execute(
                update(agents_table)
                .where(agents_table.c.id == between.id)
                .values(**_check_columns(CheckStatus.FAILED))
            )
            for plan, agent in spawned:
                values = _check_columns(plan.check) | ({"finished_at": OLD} if plan.old else {})
                if plan.task == "n=9":  # checked and passed, then failed at its final commit
                    values |= {"status": "failed", "error_kind": "merge_conflict"}
                if values:
                    conn.execute(
                        update(agents_table).where(agents_table.c.id == agent.id).values(**values)
                    )
        yield grove


def _expected(
    rows: list[AgentRecord], key: Callable[[AgentRecord], str | None], since: datetime | None
) -> dict[str | None, dict[str, Any]]:
    """The figures recomputed from agent records, in the shape ``--json`` prints them."""
    groups: dict[str | None, list[AgentRecord]] = defaultdict(list)
    for a in rows:
        if a.status.finished and (since is None or (a.finished_at and a.finished_at >= since)):
            groups[key(a)].append(a)
    out = {}
    for name, members in groups.items():
        completed = [a for a in members if a.status is AgentStatus.COMPLETED]
        passed = [a for a in completed if a.check.status is CheckStatus.PASSED]
        tokens = sum(a.tokens_in + a.tokens_out for a in members)
        cost = sum(a.cost_usd for a in members)
        ran = [a.duration_ms for a in members if a.started_at is not None]
        out[name] = {
            "group": name,
            "agents": len(members),
            "completed": len(completed),
            "passed": len(passed),
            "check_failed": sum(a.check.status is CheckStatus.FAILED for a in members),
            "unchecked": sum(a.check.status is CheckStatus.NONE for a in completed),
            "pass_rate": len(passed) / len(members),
            "tokens_in": sum(a.tokens_in for a in members),
            "tokens_out": sum(a.tokens_out for a in members),
            "cost_usd": pytest.approx(cost),
            "cost_per_pass_usd": pytest.approx(cost / len(passed)) if passed else None,
            "tokens_per_pass": pytest.approx(tokens / len(passed)) if passed else None,
            "median_duration_ms": statistics.median(ran) if ran else None,
        }
    return out


def _stats_json(repo: Path, *args: str) -> dict[str, Any]:
    done = run_cli("stats", "--json", *args, cwd=repo)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_stats_json_equals_what_the_database_holds(populated: Grove, repo: Path) -> None:
    rows = populated.store.list_agents()
    assert len(rows) == len(PLAN) + 2

    overall = _stats_json(repo)
    assert overall["by"] is None and overall["groups"] == [] and overall["passing"] == PASSING
    assert overall["total"] == _expected(rows, lambda a: None, None)[None]
    # Not vacuous: 3 passed of 10 finished (the tester whose check passed but that failed,
    # and the pending reviewer, do not), and every dollar spent is divided by those 3.
    assert overall["total"]["agents"] == 10 and overall["total"]["passed"] == 3
    assert overall["total"]["unchecked"] == 3 and overall["total"]["check_failed"] == 1

    grouped = {}
    for by, key in (("role", lambda a: a.role), ("model", lambda a: a.model)):
        report = _stats_json(repo, "--by", by)
        expected = _expected(rows, key, None)
        assert report["by"] == by
        assert [g["group"] for g in report["groups"]] == sorted(n for n in expected if n)
        grouped[by] = {g["group"]: g for g in report["groups"]}
        assert grouped[by] == expected
        assert report["total"] == overall["total"]

    by_role = grouped["role"]
    implementer = by_role["implementer"]
    assert (implementer["agents"], implementer["passed"]) == (5, 3)
    assert implementer["cost_per_pass_usd"] == pytest.approx((1 + 2 + 3 + 4 + 5) / 100 / 3)
    assert by_role["file-writer"]["cost_per_pass_usd"] is None
    assert by_role["tester"]["passed"] == 0 and by_role["tester"]["completed"] == 0
    # the reviewer was cancelled before it ran: counted, but no duration to take a median of
    assert by_role["reviewer"]["agents"] == 1 and by_role["reviewer"]["median_duration_ms"] is None
    sonnet = grouped["model"][SONNET]
    # implementer n=1..4 and testers n=8 and n=9 ran (the reviewer did not): six values,
    # whose middle two are 3007 and 4007
    assert sonnet["agents"] == 7 and sonnet["median_duration_ms"] == pytest.approx(3507)


def test_since_keeps_agents_that_finished_at_or_after_it(populated: Grove, repo: Path) -> None:
    rows = populated.store.list_agents()
    cut = datetime(2021, 1, 1, tzinfo=UTC)
    recent = _stats_json(repo, "--since", "2021-01-01", "--by", "role")
    assert recent["since"] == cut.isoformat()
    assert {g["group"]: g for g in recent["groups"]} == _expected(rows, lambda a: a.role, cut)
    assert recent["total"]["agents"] == 8  # the two old agents are left out
    assert "file-writer" in {g["group"] for g in recent["groups"]}  # n=6 is recent

    # The same parsing through the Python API. An offset is honoured: 12:30+02:00 is 10:30
    # UTC, before the old agents' 12:00 UTC; a naive datetime is UTC: 12:00:01 is just after.
    assert populated.stats(since="2020-03-01T12:30+02:00").total.agents == 10
    after = populated.stats(since="2020-03-01T12:00:01", by="role")
    assert after.to_json()["total"] == recent["total"]
    assert after.to_json()["groups"] == recent["groups"]
    at = populated.stats(since=OLD.replace(tzinfo=None))  # exactly the moment: included
    assert at.total.agents == 10 and at.since == OLD


def test_the_table_shows_the_figures_and_says_what_passing_means(
    populated: Grove, repo: Path
) -> None:
    done = run_cli("stats", "--by", "role", cwd=repo)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Cost per passing work, by role")
    implementer = next(line.split() for line in lines if line.lstrip().startswith("implementer"))
    # role, agents, passed, check failed, unchecked, pass rate, cost, cost/pass
    assert implementer[:8] == ["implementer", "5", "3", "1", "1", "60%", "$0.1500", "$0.0500"]
    total = next(line.split() for line in lines if line.lstrip().startswith("total"))
    assert total[1:3] == ["10", "3"]
    assert "completed agents without a check are unchecked, not passing" in " ".join(lines)


def test_bad_input_is_one_line_exit_2_before_anything_is_opened(repo: Path) -> None:
    # No grove here: the value is refused first, and nothing is created.
    for args, named in (
        (("--by", "foo"), "--by 'foo': group by role or model"),
        (("--since", "yesterday"), "--since 'yesterday': give an ISO date or datetime"),
    ):
        done = run_cli("stats", *args, cwd=repo)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and named in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (repo / ".grove").exists()


@pytest.mark.parametrize(
    ("by", "since"),
    [
        ("team", None),
        ("Role", None),
        (None, "last week"),
        (None, "2026-13-01"),
        (None, ""),
        (None, "2026-12-01\x00"),
        (None, "0001-01-01T00:00+01:00"),  # before the calendar's start in UTC
    ],
)
def test_the_python_api_refuses_bad_values(grove: Grove, by: str | None, since: str) -> None:
    with pytest.raises(BadInput, match="role or model" if by else "ISO date or datetime"):
        grove.stats(by=by, since=since)


def test_an_empty_grove_has_no_figures(grove: Grove) -> None:
    empty = grove.stats(by="model")
    assert empty.groups == () and empty.total.agents == 0
    assert empty.total.pass_rate is None and empty.total.median_duration_ms is None


def test_metrics_count_checks_by_role_model_and_result(populated: Grove) -> None:
    rows = populated.store.list_agents()
    with TestClient(create_app(populated)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f.samples for f in text_string_to_metric_families(response.text)}
    scraped = {
        (s.labels["role"], s.labels["model"], s.labels["result"]): s.value
        for s in families["grove_checks"]
        if s.name == "grove_checks_total"
    }
    expected: dict[tuple[str, str, str], int] = {}
    for a in rows:
        if a.status.finished and a.check.status is not CheckStatus.NONE:
            for result in ("passed", "failed"):
                expected.setdefault((a.role, a.model, result), 0)
            expected[(a.role, a.model, a.check.status.value)] += 1
    assert scraped == expected
    assert scraped[("implementer", SONNET, "passed")] == 2
    assert scraped[("implementer", SONNET, "failed")] == 1
    assert scraped[("tester", SONNET, "passed")] == 1  # counted though the agent failed later
    assert not any(role == "file-writer" for role, _, _ in scraped)  # no check, no series
    assert ("reviewer", SONNET, "failed") not in scraped  # not finished: not yet counted


def test_the_dashboard_shows_checks_and_the_stats_table(populated: Grove) -> None:
    rows = {a.task: a for a in populated.store.list_agents()}
    failed_check = rows["n=3"]
    with TestClient(create_app(populated)) as client:
        page = client.get(f"/agents/{failed_check.id}").text
        listing = client.get("/agents").text
        usage = client.get("/usage?group=role").text
        by_model = client.get("/usage?group=model").text
        bad = client.get("/usage?group=team")

    # The check's output tail is shown as text: escaped, control characters visible.
    assert "&lt;script&gt;alert(&#39;tail&#39;)&lt;/script&gt;" in page
    assert "<script>alert" not in page and "\x1b" not in page
    assert "\\x1b[31mred\\x1b[0m [bold]no[/bold]" in page
    for fact in ("<dt>rounds</dt><dd>3</dd>", '<dt>exit code</dt><dd class="mono">1</dd>'):
        assert fact in page
    assert '<span class="check failed">failed</span> <span class="small muted">3 rounds' in page
    assert "pytest -q" in page and "1.2 s" in page

    assert listing.count('<span class="check passed">passed</span>') == 4
    assert listing.count('<span class="check failed">failed</span>') == 2  # one pending

    assert "Cost per passing work by role" in usage and PASSING in usage
    implementer = _table_row(usage, "implementer")
    assert implementer == [
        "implementer", "5", "3", "1", "1", "60%", "$0.1500", "$0.0500", "550", "3.0 s",
    ]  # fmt: skip
    assert _table_row(usage, "total")[1:3] == ["10", "3"]
    assert _table_row(by_model, SONNET)[1:3] == ["7", "2"]
    assert bad.status_code == 400


def _table_row(html: str, first_cell: str) -> list[str]:
    """The cells of the stats table's row whose first cell is ``first_cell``."""
    table = html.split('<table class="grid stats">')[1].split("</table>", maxsplit=1)[0]
    start = table.index(f"<tr><td>{first_cell}</td>")
    row = table[start : table.index("</tr>", start)]
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_a_role_named_with_markup_and_escapes_is_shown_as_text(repo: Path) -> None:
    toml_role = ROLE.replace("\x1b", "\\u001b")
    (repo / "grove.toml").write_text(
        f'[runtime]\nkind = "scripted"\n\n[roles."{toml_role}"]\ntools = ["Read"]\n'
        'description = "d"\nmodel = "claude-sonnet-4-5"\nsystem_prompt = "You read."\n'
    )
    with Grove.init(repo, runtime=ScriptedRuntime(_behaviour)) as grove:
        grove.run(ROLE, "n=1")
    done = run_cli("stats", "--by", "role", cwd=repo, env=TERMINAL)
    assert done.returncode == 0, done.stderr
    assert_inert(done.stdout)
    assert "ev[/]il\\x1b[5mrole:warning:" in done.stdout
