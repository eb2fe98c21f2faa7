"""What grove's check runner costs: `run_check` (confined in bubblewrap, and unconfined with
``sandbox = "off"``) next to the same command run directly with ``subprocess.run(["/bin/sh",
"-c", ...])`` with the same environment (the floor). Not a test: prints a table.

    .venv/bin/python bench/check_overhead.py [--runs 60]

Commands: ``true`` (the fixed cost alone) and a small "test suite" (``python3 -c`` importing a
module of the worktree and asserting on it, what a quick check does). Runs alternate between
the three ways after one warm-up each. Every run is verified: each exits 0 and the worktree
module's result is printed back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentgrove.checks import check_env, run_check

COMMANDS = {
    "true": "true",
    "python3 test": "python3 -c 'import calc; assert calc.add(2, 3) == 5; print(calc.add(2, 3))'",
}


def direct(command: str, cwd: Path) -> None:
    # The environment a check gets, so that the difference is the runner's, not the shell's
    # start-up with more or fewer variables (a pyenv shim, say).
    env = check_env(os.environ, confined=False)
    done = subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def grove(sandbox: str) -> Callable[[str, Path], None]:
    def run(command: str, cwd: Path) -> None:
        result = run_check(
            command,
            cwd,
            timeout_s=60,
            home=None,
            git_dir=None,
            sandbox=sandbox,  # type: ignore[arg-type]
        )
        assert result.passed and result.error is None, (result.error, result.output_tail)
        if "calc" in command:
            assert result.output_tail == "5\n", result.output_tail

    return run


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    ways: dict[str, Callable[[str, Path], None]] = {
        "direct (floor)": direct,
        'run_check, sandbox "off"': grove("off"),
        "run_check, bubblewrap": grove("auto"),
    }
    table = Table("command", "way", "median ms", "p99 ms", "ratio (median)", "extra ms")
    with tempfile.TemporaryDirectory(prefix="grove-check-bench-") as tmp:
        worktree = Path(tmp)
        (worktree / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        for label, command in COMMANDS.items():
            times: dict[str, list[float]] = {way: [] for way in ways}
            for fn in ways.values():  # warm-up
                fn(command, worktree)
            for _ in range(args.runs):
                for way, fn in ways.items():
                    started = time.perf_counter()
                    fn(command, worktree)
                    times[way].append((time.perf_counter() - started) * 1000)
            floor = statistics.median(times["direct (floor)"])
            for way, values in times.items():
                median = statistics.median(values)
                table.add_row(
                    label,
                    way,
                    f"{median:.1f}",
                    f"{_percentile(values, 0.99):.1f}",
                    f"{median / floor:.2f}",
                    f"{median - floor:+.1f}",
                )
    console = Console(width=120)
    console.print(table)
    load = os.getloadavg()
    console.print(f"{args.runs} runs each, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
