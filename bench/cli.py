"""How long read-only ``grove`` commands take to start and answer, next to the floor: a bare
``python -c "import sqlalchemy, pydantic, typer, rich.table"`` (what any such command must load).

    .venv/bin/python bench/cli.py            # 30 runs of each
    .venv/bin/python bench/cli.py --quick    # 8 runs of each

A temporary git repository with ``grove init`` done and a few agents holds the data; each
command is run as its own process, the floor and the commands interleaved, and each run is
checked to exit 0. Prints median and p99 (ms) and each median's ratio to the floor's; the goal
(issue 13) is at most 1.3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = [sys.executable, "-c", "import sqlalchemy, pydantic, typer, rich.table"]
GROVE = [sys.executable, "-m", "agentgrove"]


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(
            f"bench/cli.py: {' '.join(argv[2:])} exited {done.returncode}: "
            f"{done.stderr.strip()[-300:]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="8 runs of each")
    args = parser.parse_args()
    runs = 8 if args.quick else args.runs
    if runs < 2:
        parser.error("--runs must be at least 2")
    with tempfile.TemporaryDirectory(prefix="grove-bench-cli-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        # Bytecode as users have it: with PYTHONDONTWRITEBYTECODE (set in some sandboxes) every
        # run compiled grove's ~150 modules from source, while the floor's libraries come with
        # their .pyc; the warm-up run below writes grove's.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GROVE_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env |= {"HOME": tmp, "COLUMNS": "200"}
        for step in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
            subprocess.run(
                [*step[:1], "-c", "user.name=b", "-c", "user.email=b@b", *step[1:]],
                cwd=repo,
                check=True,
            )
        subprocess.run([*GROVE, "init"], cwd=repo, env=env, check=True, capture_output=True)
        spawned = subprocess.run(
            [*GROVE, "spawn", "tester", "look around"],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        agent = spawned.stdout.strip()
        commands: dict[str, list[str]] = {
            "floor (imports)": FLOOR,
            "grove --help": [*GROVE, "--help"],
            "grove ls": [*GROVE, "ls"],
            "grove show": [*GROVE, "show", agent],
            "grove roles": [*GROVE, "roles"],
            "grove budget": [*GROVE, "budget"],
            "grove workflow ls": [*GROVE, "workflow", "ls"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # one warm-up each (page cache, .pyc)
            _timed(argv, repo, env)
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(_timed(argv, repo, env))
    floor = statistics.median(samples["floor (imports)"])
    print(f"read-only commands, {runs} runs each, load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<20} {'median ms':>10} {'p99 ms':>8} {'vs floor':>9}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<20} {median:>10.0f} {_p99(values):>8.0f} {median / floor:>8.2f}x")


if __name__ == "__main__":
    main()
