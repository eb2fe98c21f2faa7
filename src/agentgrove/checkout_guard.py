"""What a merge into the user's checkout would overwrite unseen.

git refuses to overwrite an untracked file when it checks out a commit, but it treats an
ignored file as expendable and overwrites it silently. An agent controls its branch, so it can
un-ignore the user's ``.env`` (or any ignored file: local settings, secrets, build output the
user keeps) and commit its own; merging that branch would replace the user's file with no trace.
Grove's merges into a checkout (``grove merge``, the merge queue's fast-forward) ask
:func:`files_in_the_way` first and refuse when it names anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agentgrove.gitexec import DIFF_SAFE, run_git


def in_the_way(changes: Sequence[tuple[str, str]], checkout: Path) -> list[str]:
    """The paths in ``checkout`` that bringing ``changes`` (``git diff --name-status`` pairs
    from its HEAD to the commit to merge) would overwrite unseen, sorted: an existing entry
    where a file is added, or a non-folder where an added file needs a folder, neither tracked
    at HEAD. Reads only ``lstat``."""
    gone = {path for status, path in changes if status == "D"}
    found: set[str] = set()
    for status, path in changes:
        if status != "A":
            continue
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in gone:
                continue  # a tracked file the merge replaces with the folder itself
            target = checkout / parent
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                found.add(parent)
                break
        else:
            tracked_below = any(g.startswith(f"{path}/") for g in gone)
            if os.path.lexists(checkout / path) and not tracked_below:
                found.add(path)
    return sorted(found)


def files_in_the_way(repo: Path, head: str, commit: str) -> list[str]:
    """:func:`in_the_way` for merging ``commit`` into ``repo``'s checkout at ``head``."""
    out = run_git(
        ["diff", *DIFF_SAFE, "--no-renames", "--name-status", "-z", head, commit, "--"], repo
    )
    fields = out.split("\0")
    changes = [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]
    return in_the_way(changes, repo)


def in_the_way_refusal(paths: Sequence[str]) -> str:
    """Why the merge was refused, naming the files (attacker-chosen names: the caller renders
    them escaped)."""
    shown = ", ".join(paths[:20]) + (f" and {len(paths) - 20} more" if len(paths) > 20 else "")
    return (
        f"files the merge would overwrite are in your checkout, untracked or ignored ({shown}): "
        "move them away first"
    )
