"""Both store backends against real databases: SQLite files and a throwaway PostgreSQL database.

Every test runs on both (PostgreSQL tests skip without a server, and fail under CI=true).
Tests share the session's PostgreSQL database, so each uses its own task ids and message type.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from generated import models
from spectask.store import (
    Observation,
    StoreSchemaError,
    TaskRecord,
    TaskState,
    TaskStore,
    advance,
    open_store,
    state_of,
)
from spectask.store.migrations import LATEST_VERSION, MIGRATIONS
from spectask.store.states import STORED_STATES
from tests.store_support import (
    EXPECTED,
    OUTCOMES,
    Scenario,
    fresh_database,
    history,
    session_postgres,
)

BACKENDS = ["sqlite", "postgresql"]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from session_postgres()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tasks.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[TaskStore]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


@pytest.fixture
def kind() -> str:
    """A message type no other test uses, to count and list only this test's tasks."""
    return f"test.{uuid.uuid4().hex[:12]}"


def fold(observations: list[Observation]) -> TaskRecord:
    record = None
    for observation in observations:
        record = advance(record, observation, now=EPOCH)
    assert record is not None
    return record


def comparable(record: TaskRecord | None) -> TaskRecord:
    assert record is not None
    return replace(record, updated_at=EPOCH)


async def apply_all(store: TaskStore, observations: list[Observation]) -> None:
    for observation in observations:
        await store.apply(observation)


async def test_every_state_is_reached_counted_and_listed(store: TaskStore, kind: str) -> None:
    for outcome in OUTCOMES:
        await apply_all(store, history(f"{kind}-{outcome}", Scenario(outcome), message_type=kind))
    for outcome in OUTCOMES:
        record = await store.get(f"{kind}-{outcome}")
        assert state_of(record) is EXPECTED[outcome], outcome
    expected = Counter(EXPECTED.values())
    assert await store.counts_by_state(kind) == {state: expected[state] for state in STORED_STATES}
    assert sum((await store.counts_by_state()).values()) >= len(OUTCOMES)
    dead = await store.list(TaskState.DEAD, kind)
    assert sorted(record.task_id for record in dead) == [
        f"{kind}-{outcome}" for outcome in ("dead", "dead_and_failed", "dead_by_worker")
    ]
    assert all(record.dead_reason == "attempts_exhausted" for record in dead)
    assert await store.list(TaskState.DEAD, "no.such_type") == []


async def test_an_id_never_seen_is_unknown(store: TaskStore, kind: str) -> None:
    await apply_all(store, history(f"{kind}-known", Scenario("queued"), message_type=kind))
    missing = f"{kind}-{uuid.uuid4()}"
    assert await store.get(missing) is None
    assert state_of(await store.get(missing)) is TaskState.UNKNOWN
    found = await store.get_many([missing, f"{kind}-known", f"{kind}-known"])
    assert list(found) == [f"{kind}-known"]
    assert await store.get_many([]) == {}


async def test_a_duplicate_result_is_one_record(store: TaskStore, kind: str) -> None:
    task_id = f"{kind}-dup"
    submitted = models.TaskEvent(task_id=task_id, event="submitted", message_type=kind, at=EPOCH)
    result = models.TaskResult(
        task_id=task_id,
        message_type=kind,
        status="succeeded",
        worker_id="worker-1",
        attempt=1,
        submitted_at=EPOCH,
        started_at=EPOCH + timedelta(seconds=1),
        finished_at=EPOCH + timedelta(seconds=2),
        result={"rows": 3, "text": "naïve ✓", "nested": {"list": [1, None, 2.5]}},
    )
    await store.apply_event(submitted)
    first = await store.apply_result(result)
    for _ in range(3):
        assert await store.apply_result(result) == first  # updated_at included: no write
        assert await store.apply_event(submitted) == first
    assert first.state is TaskState.SUCCEEDED and first.result == result.result
    assert (first.submitted_at, first.finished_at) == (EPOCH, result.finished_at)
    assert len(await store.list(message_type=kind)) == 1
    assert sum((await store.counts_by_state(kind)).values()) == 1
    assert await store.get(task_id) == first


@pytest.mark.parametrize("seed", range(3))
async def test_out_of_order_arrival_ends_in_the_right_state(
    store: TaskStore, kind: str, seed: int
) -> None:
    shuffle = random.Random(seed)
    for outcome in OUTCOMES:
        events = history(f"{kind}-{outcome}", Scenario(outcome, attempts=3, redelivered=True))
        arrival = events + shuffle.sample(events, k=len(events) // 2)
        shuffle.shuffle(arrival)
        await apply_all(store, arrival)
        stored = await store.get(f"{kind}-{outcome}")
        assert comparable(stored) == comparable(fold(events)), outcome
        assert state_of(stored) is EXPECTED[outcome]


async def test_reopening_keeps_the_history(store_url: str, kind: str) -> None:
    first = await open_store(store_url)
    for outcome in OUTCOMES:
        await apply_all(first, history(f"{kind}-{outcome}", Scenario(outcome, attempts=2)))
    ids = [f"{kind}-{outcome}" for outcome in OUTCOMES]
    before = await first.get_many(ids)
    await first.close()
    second = await open_store(store_url)  # a collector restart
    try:
        assert await second.get_many(ids) == before  # exactly: times, JSON, errors, progress
    finally:
        await second.close()


def schema_versions(url: str) -> list[tuple[int, str]]:
    """The schema_version table, read with the plain drivers."""
    query = "SELECT version, description FROM schema_version ORDER BY version"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [(int(v), str(d)) for v, d in conn.execute(query)]
    with psycopg.connect(url) as pg:
        return [(int(v), str(d)) for v, d in pg.execute(query)]


def bump_schema(url: str) -> None:
    statement = "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement, (LATEST_VERSION + 1, "from the future", "2099-01-01"))
        return
    with psycopg.connect(url) as pg:
        pg.execute(statement.replace("?", "%s"), (LATEST_VERSION + 1, "future", EPOCH))


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend, for the schema tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh/tasks.db"
        return
    with fresh_database("spectask_migrate") as url:
        yield url


async def test_migrations_apply_once_even_when_opened_concurrently(fresh_url: str) -> None:
    stores = await asyncio.gather(*(open_store(fresh_url) for _ in range(4)))
    await asyncio.gather(*(opened.close() for opened in stores))
    expected = [(step.version, step.description) for step in MIGRATIONS]
    assert schema_versions(fresh_url) == expected
    again = await open_store(fresh_url)  # up to date: a no-op
    await again.close()
    assert schema_versions(fresh_url) == expected


async def test_a_schema_newer_than_the_code_is_refused(fresh_url: str) -> None:
    await (await open_store(fresh_url)).close()
    bump_schema(fresh_url)
    with pytest.raises(StoreSchemaError, match="upgrade spectask"):
        await open_store(fresh_url)


async def test_two_concurrent_appliers_agree(store_url: str, kind: str) -> None:
    """Two collectors, the events of 50 tasks interleaved between them, all at once."""
    scenarios = [
        Scenario(OUTCOMES[n % len(OUTCOMES)], attempts=2, redelivered=True) for n in range(50)
    ]
    histories = {
        f"{kind}-{n:02d}": history(f"{kind}-{n:02d}", s, message_type=kind)
        for n, s in enumerate(scenarios)
    }
    shuffle = random.Random(7)
    first, second = await open_store(store_url), await open_store(store_url)
    try:
        # Each task's events side by side, alternating between the two stores: both pools'
        # connections fight over the same row, and its first insert.
        calls = []
        for index, events in enumerate(histories.values()):
            arrival = shuffle.sample(events, k=len(events))  # each once: a lost write shows
            for step, observation in enumerate(arrival):
                calls.append((first if (step + index) % 2 else second, observation))
        await asyncio.gather(*(applier.apply(observation) for applier, observation in calls))
        stored = await first.get_many(histories)
        assert len(stored) == 50
        for task_id, events in histories.items():
            assert comparable(stored[task_id]) == comparable(fold(events)), task_id
        assert sum((await second.counts_by_state(kind)).values()) == 50
        assert len(await second.list(message_type=kind, limit=1000)) == 50
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_list_pages_most_recently_updated_first(store: TaskStore, kind: str) -> None:
    ids = [f"{kind}-{n}" for n in range(5)]
    for task_id in ids:
        await apply_all(store, history(task_id, Scenario("running"), message_type=kind))
    everything = await store.list(message_type=kind)
    assert [record.task_id for record in everything] == ids[::-1]
    assert [r.task_id for r in await store.list(TaskState.STARTED, kind, limit=2, offset=1)] == [
        ids[3],
        ids[2],
    ]
    assert await store.list(message_type=kind, limit=0) == []
    with pytest.raises(ValueError, match="limit and offset"):
        await store.list(limit=-1)
