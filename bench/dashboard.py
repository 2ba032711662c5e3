"""`make bench-dashboard`: the dashboard's API on a store of 1,000,000 generated task records.

Fills a fresh SQLite file and a fresh PostgreSQL database (`BENCH_POSTGRES_URL`, default the
local server's `postgres` database, where a throwaway database is created and dropped) with
generated records in bulk, starts a real `spectask dashboard` process on each, and times every
API call the page makes (first load included) over real HTTP, plus the one-second refresh's
own store queries as the dashboard reports them. Prints p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spectask.store.batches import batch_of

ROOT = Path(__file__).resolve().parents[1]
TYPES = [
    "image_processing.resize",
    "image_processing.convert",
    "data_analysis.statistics",
    "data_analysis.aggregate",
    "report_generation.pdf",
]
STATES = (
    ["succeeded"] * 80
    + ["failed"] * 5
    + ["dead"] * 3
    + ["queued"] * 8
    + ["started"] * 2
    + [
        "retrying",
        "cancelled",
    ]
)


def run_of(batch: int) -> str:
    """The run part of batch `bench<batch>`'s ids (spectask.runtime.producer.batch_task_ids)."""
    return f"{batch:012x}"


def task_id(n: int) -> str:
    """Record n's id: batches of 100,000 shaped as `produce --batch bench<k>` names them."""
    return f"bench{n // 100_000}-{run_of(n // 100_000)}-{n % 100_000:06d}"


CALLS = [
    "/",
    "/static/app.js",
    "/api/summary",
    "/api/tasks?limit=50",
    "/api/tasks?limit=50&state=failed",
    "/api/tasks?limit=50&type=data_analysis.statistics",
    "/api/tasks?limit=50&type=data_analysis.statistics&state=queued",
    "/api/tasks?limit=50&batch=bench0",
    f"/api/tasks?limit=50&q=bench0-{run_of(0)}-00001",
    "/api/tasks?limit=50&offset=5000",
    "/api/tasks/{task}",
    "/api/topology",
    "/api/operations",
    "/metrics",
]


def rows(count: int) -> list[tuple[Any, ...]]:
    """`count` records over the last day, in batches of 100,000 (`task_id`)."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        state = rng.choice(STATES)
        submitted = now - timedelta(seconds=rng.uniform(0, 86_400))
        finished = submitted + timedelta(seconds=rng.uniform(0.01, 3))
        final = state in ("succeeded", "failed", "dead", "cancelled")
        out.append(
            (
                task_id(n),
                rng.choice(TYPES),
                state,
                1 if state != "retrying" else 2,
                f"w{n % 8}",
                submitted,
                submitted,
                finished if final else submitted,
                finished if final else submitted,
                json.dumps({"ok": n}) if state == "succeeded" else None,
                json.dumps({"type": "ValueError", "message": "bad"}) if state == "failed" else None,
                "exception" if state == "dead" else None,
                batch_of(task_id(n)),
            )
        )
    return out


INSERT_COLUMNS = (
    "task_id, message_type, state, attempts, worker_id, worker_at, submitted_at, started_at, "
    "finished_at, state_at, updated_at, result, error, dead_reason, batch"
)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


async def migrate(url: str) -> None:
    from spectask.store import open_store

    store = await open_store(url)
    await store.close()


async def recount(url: str) -> None:
    """The fill writes rows straight into the table, past the store's incremental counts."""
    from spectask.store import open_store

    store = await open_store(url)
    try:
        await store.recount()
    finally:
        await store.close()


def fill_sqlite(path: Path, data: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            f"INSERT INTO tasks ({INSERT_COLUMNS}) VALUES ({', '.join('?' * 15)})",
            [
                (
                    *r[:5],
                    _iso(r[5]),
                    _iso(r[5]),
                    _iso(r[6]),
                    _iso(r[7]),
                    _iso(r[8]),
                    _iso(r[8]),
                    *r[9:],
                )
                for r in data
            ],
        )
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(url: str, data: list[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY tasks ({INSERT_COLUMNS}) FROM STDIN") as copy:
            for r in data:
                copy.write_row((*r[:5], r[5], r[5], r[6], r[7], r[8], r[8], *r[9:]))
        conn.commit()
        cursor.execute("ANALYZE tasks")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def measure(base: str, task: str, repeat: int) -> dict[str, tuple[float, float]]:
    results = {}
    for call in CALLS:
        path = call.replace("{task}", task)
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            status, _ = get(base + path)
            times.append((time.perf_counter() - began) * 1000)
            assert status == 200, (path, status)
        times.sort()
        results[call] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])
        print(f"  ... {call}: p95 {results[call][1]:.1f} ms", flush=True)
    return results


def run_dashboard(amqp_url: str, store_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AMQP_URL": amqp_url, "STORE_URL": store_url}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main-dashboard.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_one(name: str, store_url: str, amqp_url: str, repeat: int, records: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = run_dashboard(amqp_url, store_url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        first = None
        while first is None:
            try:
                began = time.perf_counter()
                get(base + "/")
                first = (time.perf_counter() - began) * 1000
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        ticks = []
        for _ in range(10):
            summary = json.loads(get(base + "/api/summary")[1])
            ticks.append(summary["timings_ms"])
            time.sleep(1.0)
        results = measure(base, task_id(42), repeat)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"\n{name}: {records:,} records; first page load {first:.1f} ms (over HTTP)")
    print(f"  {'call':<66}{'p50 ms':>9}{'p95 ms':>9}")
    for call, (p50, p95) in results.items():
        print(f"  {call:<66}{p50:>9.1f}{p95:>9.1f}")
    for key in ("counts", "changes"):
        values = sorted(t[key] for t in ticks if key in t)
        if values:
            print(
                f"  refresh tick: {key:<52}"
                f"{statistics.median(values):>9.1f}{values[-1]:>9.1f} (max)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    began = time.monotonic()
    data = rows(args.records)
    print(f"generated {len(data):,} records in {time.monotonic() - began:.1f} s")
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tasks.db"
            url = f"sqlite:///{path}"
            asyncio.run(migrate(url))
            began = time.monotonic()
            fill_sqlite(path, data)
            asyncio.run(recount(url))
            print(f"sqlite filled and counted in {time.monotonic() - began:.1f} s")
            bench_one("SQLite", url, amqp_url, args.repeat, len(data))
    if args.only in (None, "postgres"):
        import psycopg

        admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres")
        name = f"spectask_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = admin.rsplit("/", 1)[0] + f"/{name}"
        try:
            asyncio.run(migrate(url))
            began = time.monotonic()
            fill_postgres(url, data)
            asyncio.run(recount(url))
            print(f"postgres filled and counted in {time.monotonic() - began:.1f} s")
            bench_one("PostgreSQL", url, amqp_url, args.repeat, len(data))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
