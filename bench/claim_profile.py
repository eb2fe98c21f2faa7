"""Where one worker's time goes per no-op agent: SQL statements and transactions per agent, by
statement, and (``--cprofile``) the hottest functions. Not a test: prints a report.

    .venv/bin/python bench/claim_profile.py [--agents 300] [--backend postgresql] [--cprofile]

Runs N no-op agents (``[runtime] kind = "scripted"``, delay 0, a plain directory) through one
in-process :class:`agentgrove.worker.Worker` with ``drain``, counting every statement the
store's engine executes (SQLAlchemy ``before_cursor_execute``; an ``executemany`` counts once),
every transaction (``begin``), every thread hop (``anyio.to_thread.run_sync``), and the process's
CPU per agent, with the part spent inside store calls. ``--cprofile`` runs the thread hops
inline (cProfile sees one thread; ``SORT``/``TOP`` in the environment pick the listing).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy
from sqlalchemy import event

from agentgrove.grove import Grove
from agentgrove.worker import Worker

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _shape(statement: str) -> str:
    """A statement's first words and table, for grouping."""
    text = " ".join(statement.split())
    text = re.sub(r"\(.*", "(...", text)
    return text[:90]


def run(db_url: str | None, agents: int, concurrency: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="grove-claim-profile-") as tmp:
        root = Path(tmp)
        (root / "grove.toml").write_text('[runtime]\nkind = "scripted"\nscripted_delay_s = 0\n')
        if db_url is not None:
            os.environ["GROVE_DB_URL"] = db_url
        else:
            os.environ.pop("GROVE_DB_URL", None)
        os.environ.pop("GROVE_HOME", None)
        with Grove.init(root) as grove:
            for i in range(agents):
                grove.spawn("tester", f"noop {i}")
            counts: collections.Counter[str] = collections.Counter()
            begins = [0]

            @event.listens_for(grove.store.engine, "before_cursor_execute")
            def _count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
                counts[_shape(statement)] += 1

            @event.listens_for(grove.store.engine, "begin")
            def _begin(_conn: Any) -> None:
                begins[0] += 1

            db_cpu = [0.0]
            real_db = grove.service.db

            async def timed_db(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                def call() -> Any:
                    t = time.thread_time()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        db_cpu[0] += time.thread_time() - t

                return await real_db(call)

            grove.service.db = timed_db  # type: ignore[method-assign]
            hops = collections.Counter[str]()
            real_hop = anyio.to_thread.run_sync

            async def counted_hop(fn: Any, *args: Any, **kwargs: Any) -> Any:
                hops[getattr(fn, "__qualname__", None) or type(fn).__name__] += 1
                return await real_hop(fn, *args, **kwargs)

            if not profile:
                anyio.to_thread.run_sync = counted_hop  # type: ignore[assignment]
            worker = Worker(grove.service, grove.config.worker, concurrency=concurrency, drain=True)
            profiler = cProfile.Profile() if profile else None
            if profile:
                # cProfile sees one thread: run the worker's thread hops inline to see them.
                async def inline(fn: Any, *args: Any, **_kw: Any) -> Any:
                    return fn(*args)

                anyio.to_thread.run_sync = inline  # type: ignore[assignment]
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            anyio.run(worker.run)
            if profiler is not None:
                profiler.disable()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    total = sum(counts.values())
    print(
        f"{agents} agents in {elapsed:.2f} s ({agents / elapsed:.0f}/s); "
        f"{total / agents:.1f} statements and {begins[0] / agents:.1f} transactions per agent; "
        f"worker CPU {cpu / agents * 1000:.2f} ms per agent, "
        f"{db_cpu[0] / agents * 1000:.2f} ms of it in store calls"
    )
    for shape, n in counts.most_common(25):
        print(f"{n / agents:6.2f}  {shape}")
    print(f"thread hops per agent: {sum(hops.values()) / agents:.1f}")
    for name, n in hops.most_common(12):
        print(f"{n / agents:6.2f}  {name}")
    if profiler is not None:
        stats = pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime"))
        stats.print_stats(int(os.environ.get("TOP", "45")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    if args.backend == "sqlite":
        run(None, args.agents, args.concurrency, args.cprofile)
        return
    admin = sqlalchemy.create_engine(PG_URL)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        run(url, args.agents, args.concurrency, args.cprofile)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
