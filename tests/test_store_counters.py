"""Counts by type and state kept as tasks change (store migration 5), on both backends.

The truth is a plain GROUP BY over the tasks table, read with the drivers; the kept counts
must equal it after any history, with two collectors on one database, after a fold, after a
bulk load (`recount`), and for a database that already had tasks when step 5 arrived.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from spectask.store import EventKind, Observation, TaskState, TaskStore, open_store
from spectask.store.migrations import MIGRATIONS
from spectask.store.states import STORED_STATES, from_storage_code
from tests import test_store_backends as backends
from tests.store_support import OUTCOMES, Scenario, history

fresh_url = backends.fresh_url  # the backends' fixture: an empty database of each kind


def run_sql(
    url: str, statement: str, rows: Sequence[tuple[object, ...]] | None = None
) -> list[tuple[Any, ...]]:
    """One statement with the plain driver (`?` marks), past the store."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            if rows is not None:
                conn.executemany(statement, rows)
                return []
            return conn.execute(statement).fetchall()
    with psycopg.connect(url) as pg:
        if rows is not None:
            with pg.cursor() as cursor:
                cursor.executemany(statement.replace("?", "%s"), rows)
            return []
        return pg.execute(statement.replace("?", "%s")).fetchall()


def truth(url: str) -> dict[str, dict[TaskState, int]]:
    found = run_sql(url, "SELECT message_type, state, COUNT(*) FROM tasks GROUP BY 1, 2")
    counts: dict[str, dict[TaskState, int]] = {}
    for message_type, state, n in found:
        per = counts.setdefault(message_type or "", dict.fromkeys(STORED_STATES, 0))
        per[from_storage_code(state)] += int(n)
    return counts


def nonzero(counts: dict[str, dict[TaskState, int]]) -> dict[str, dict[TaskState, int]]:
    return {t: per for t, per in counts.items() if any(per.values())}


async def kept(store: TaskStore) -> dict[str, dict[TaskState, int]]:
    return nonzero(await store.counts_by_type())


def histories(prefix: str, count: int) -> dict[str, list[Observation]]:
    scenarios = [
        Scenario(OUTCOMES[n % len(OUTCOMES)], attempts=1 + n % 3, redelivered=n % 2 == 0)
        for n in range(count)
    ]
    return {
        f"{prefix}-{n}": history(f"{prefix}-{n}", s, message_type=f"type.{n % 3}")
        for n, s in enumerate(scenarios)
    }


async def test_counts_follow_every_history(fresh_url: str) -> None:
    store = await open_store(fresh_url)
    try:
        shuffle = random.Random(3)
        for steps in histories("c", 60).values():
            for observation in shuffle.sample(steps, k=len(steps)):
                await store.apply(observation)
        # a task first seen without a type, then typed by its copy, moves between types
        untyped = Observation(task_id="moved", kind=EventKind.STARTED, at=datetime.now(UTC))
        await store.apply(untyped)
        assert (await store.counts_by_type())[""][TaskState.STARTED] == 1
        typed = Observation(
            task_id="moved", kind=EventKind.SUBMITTED, at=untyped.at, message_type="type.0"
        )
        await store.apply(typed)
        expected = truth(fresh_url)
        assert await kept(store) == expected
        assert await store.counts_by_state("type.1") == expected["type.1"]
        total = await store.counts_by_state()
        assert sum(total.values()) == 61
    finally:
        await store.close()


async def test_two_collectors_keep_exact_counts_without_deadlocks(fresh_url: str) -> None:
    first, second = await open_store(fresh_url), await open_store(fresh_url)
    try:
        shuffle = random.Random(11)
        calls = []
        for index, steps in enumerate(histories("pair", 30).values()):
            for step, observation in enumerate(shuffle.sample(steps, k=len(steps))):
                calls.append((first if (step + index) % 2 else second).apply(observation))
        folds = [
            s.fold_counts() for s in (first, second) for _ in range(5) if hasattr(s, "fold_counts")
        ]
        await asyncio.gather(*calls, *folds)
        expected = truth(fresh_url)
        assert await kept(first) == expected
        assert await kept(second) == expected
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_a_bulk_load_is_counted_after_recount(fresh_url: str) -> None:
    store = await open_store(fresh_url)
    try:
        await store.apply(
            Observation(task_id="one", kind=EventKind.SUBMITTED, at=datetime.now(UTC))
        )
        at = datetime.now(UTC).isoformat()
        rows = [(f"bulk-{n}", "bulk.load", "succeeded", 1, at) for n in range(500)]
        run_sql(
            fresh_url,
            "INSERT INTO tasks (task_id, message_type, state, attempts, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        assert "bulk.load" not in await kept(store)  # written past the store
        await store.recount()
        assert await kept(store) == truth(fresh_url)
        assert (await store.counts_by_type())["bulk.load"][TaskState.SUCCEEDED] == 500
    finally:
        await store.close()


async def test_step_5_counts_the_tasks_a_database_already_has(fresh_url: str) -> None:
    """A database at step 4 with tasks in it: opening it runs step 5, which counts them."""
    before = [step for step in MIGRATIONS if step.version <= 4]
    postgres = not fresh_url.startswith("sqlite")
    if postgres:
        with psycopg.connect(fresh_url, autocommit=True) as pg:
            pg.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for step in before:
                for statement in step.postgres:
                    pg.execute(statement)
                pg.execute(
                    "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                    (step.version, step.description),
                )
    else:
        path = fresh_url.removeprefix("sqlite:///")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for step in before:
                for statement in step.sqlite:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (step.version, step.description, "2030-01-01"),
                )
    at = datetime.now(UTC).isoformat()
    rows = [(f"old-{n}", "old.type" if n % 2 else None, "queued", 1, at) for n in range(40)]
    run_sql(
        fresh_url,
        "INSERT INTO tasks (task_id, message_type, state, attempts, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    store = await open_store(fresh_url)
    try:
        counts = await store.counts_by_type()
        assert counts["old.type"][TaskState.QUEUED] == 20
        assert counts[""][TaskState.QUEUED] == 20
        assert nonzero(counts) == truth(fresh_url)
    finally:
        await store.close()
