"""Each task's events (its timeline and payload) on both backends: recorded, bounded, pruned.

Real SQLite files and a throwaway PostgreSQL database (tests/store_support.py's policy).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest

from spectask.store import ErrorDetail, EventKind, Observation, TaskStore, open_store
from spectask.store.events import PAYLOAD_LIMIT, PROGRESS_KEPT, capped_payload
from spectask.store.observations import SOURCE_COPY, SOURCE_DEAD_LETTER, SOURCE_RESULT
from spectask.store.retention import StoreSettings
from tests import test_store_backends as backends

# the backends' fixtures: a store of each kind on a real database
postgres_url, store_url, store = backends.postgres_url, backends.store_url, backends.store
RETENTION_ENV = "SPECTASK_EVENTS_RETENTION_DAYS"


@pytest.fixture
def task_id() -> str:
    return f"events-{uuid.uuid4().hex[:12]}"


def life(task_id: str, at: datetime) -> list[Observation]:
    """Queued with its payload, a failed attempt with progress, a retry that succeeds."""
    payload, truncated = capped_payload({"numbers": [1, 2, 3], "note": "a\x00b"})
    tick = iter(range(1000))

    def step(kind: EventKind, **fields: object) -> Observation:
        return Observation(
            task_id=task_id,
            kind=kind,
            at=at + timedelta(milliseconds=next(tick)),
            message_type="data_analysis.statistics",
            **fields,  # type: ignore[arg-type]
        )

    steps = [
        step(EventKind.SUBMITTED, source=SOURCE_COPY, payload=payload, payload_truncated=truncated),
        step(EventKind.STARTED, worker_id="w-1"),
    ]
    steps += [
        step(EventKind.PROGRESS, progress=float(n), progress_message=f"p{n}") for n in range(25)
    ]
    steps += [
        step(EventKind.RETRYING, error=ErrorDetail("ValueError", "boom")),
        step(EventKind.SUBMITTED, attempt=2, source=SOURCE_COPY, payload=payload),
        step(EventKind.STARTED, attempt=2, worker_id="w-2"),
        step(EventKind.SUCCEEDED, attempt=2, source=SOURCE_RESULT, result={"mean": 2}),
    ]
    return steps


async def test_a_tasks_life_is_its_timeline_with_progress_bounded(
    store: TaskStore, task_id: str
) -> None:
    observations = life(task_id, datetime.now(UTC))
    for observation in observations:
        await store.apply(observation)
    for observation in observations:  # every message redelivered: nothing new
        await store.apply(observation)
    stored = await store.events(task_id)
    kinds = [event.kind for event in stored]
    assert kinds.count(EventKind.PROGRESS) == PROGRESS_KEPT
    progress = [event.progress for event in stored if event.kind is EventKind.PROGRESS]
    assert progress == [float(n) for n in range(25 - PROGRESS_KEPT, 25)]  # the newest kept
    others = [k for k in kinds if k is not EventKind.PROGRESS]
    assert others == [
        EventKind.SUBMITTED,
        EventKind.STARTED,
        EventKind.RETRYING,
        EventKind.SUBMITTED,
        EventKind.STARTED,
        EventKind.SUCCEEDED,
    ]
    retrying = next(e for e in stored if e.kind is EventKind.RETRYING)
    assert retrying.error == ErrorDetail("ValueError", "boom")
    assert retrying.to_json()["error"] == "ValueError: boom"
    queued = stored[0]
    assert queued.to_json()["event"] == "queued" and queued.source == SOURCE_COPY
    # JSON text escapes a NUL (PostgreSQL holds none): both backends keep the same text
    assert queued.payload == '{"numbers":[1,2,3],"note":"a\\u0000b"}'
    assert not queued.payload_truncated
    assert stored[-1].source == SOURCE_RESULT and stored[-1].attempt == 2
    assert [e.worker_id for e in stored if e.kind is EventKind.STARTED] == ["w-1", "w-2"]


async def test_a_final_failure_said_by_result_and_dead_letter_shows_both(
    store: TaskStore, task_id: str
) -> None:
    at = datetime.now(UTC)
    error = ErrorDetail("max_retries", "ValueError: boom")
    for source, offset in ((SOURCE_RESULT, 0), (SOURCE_DEAD_LETTER, 5)):
        await store.apply(
            Observation(
                task_id=task_id,
                kind=EventKind.DEAD,
                at=at + timedelta(milliseconds=offset),
                error=error,
                dead_reason="max_retries",
                source=source,
            )
        )
    stored = await store.events(task_id)
    assert [(e.source, e.message) for e in stored] == [
        (SOURCE_RESULT, "max_retries"),
        (SOURCE_DEAD_LETTER, "max_retries"),
    ]


def test_a_payload_over_the_limit_is_cut_and_marked() -> None:
    text, truncated = capped_payload({"blob": "é" * PAYLOAD_LIMIT})
    assert truncated
    assert len(text.encode()) <= PAYLOAD_LIMIT
    assert text.startswith('{"blob":"éé')
    assert capped_payload({"n": 1}) == ('{"n":1}', False)
    # the broker's copy is bytes, kept as published; bytes that are not UTF-8 are replaced
    assert capped_payload(b'{"n": 1}') == ('{"n": 1}', False)
    assert capped_payload(b"\xff{") == ("\ufffd{", False)
    cut, truncated = capped_payload(b"x" * (PAYLOAD_LIMIT + 1))
    assert truncated and cut == "x" * PAYLOAD_LIMIT


async def test_events_older_than_the_retention_are_pruned(
    store_url: str, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RETENTION_ENV, "1")
    store = await open_store(store_url)
    try:
        now = datetime.now(UTC)
        old = Observation(task_id=task_id, kind=EventKind.SUBMITTED, at=now - timedelta(days=2))
        await store.apply(old)  # the first apply also runs the first retention batch
        fresh = Observation(task_id=task_id, kind=EventKind.STARTED, at=now)
        await store.apply(fresh)
        assert [e.kind for e in await store.events(task_id)] == [EventKind.STARTED]
        assert await store.get(task_id) is not None  # the record itself is kept
        # a later batch, asked for by hand, takes what has aged since
        assert await store.prune_events(now + timedelta(seconds=1)) >= 1
        assert await store.events(task_id) == []
    finally:
        await store.close()


async def test_retention_zero_keeps_events(
    store_url: str, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RETENTION_ENV, "0")
    assert StoreSettings().events_retention is None
    store = await open_store(store_url)
    try:
        old = datetime.now(UTC) - timedelta(days=3650)
        await store.apply(Observation(task_id=task_id, kind=EventKind.SUBMITTED, at=old))
        assert len(await store.events(task_id)) == 1
    finally:
        await store.close()


def test_a_bad_retention_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETENTION_ENV, "-1")
    with pytest.raises(ValueError, match="events_retention_days"):
        StoreSettings()


async def test_two_collectors_record_and_prune_at_once(store_url: str) -> None:
    """Two stores on one database, each task's events split between them, pruning as they go."""
    first, second = await open_store(store_url), await open_store(store_url)
    base = f"pair-{uuid.uuid4().hex[:8]}"
    try:
        lives = {f"{base}-{n}": life(f"{base}-{n}", datetime.now(UTC)) for n in range(10)}
        calls: list[Awaitable[object]] = [
            (first if step % 2 else second).apply(observation)
            for steps in lives.values()
            for step, observation in enumerate(steps)
        ]
        calls += [s.prune_events(datetime.now(UTC) - timedelta(days=1)) for s in (first, second)]
        await asyncio.gather(*calls)
        for task_id in lives:
            stored = await first.events(task_id)
            assert sum(e.kind is EventKind.PROGRESS for e in stored) == PROGRESS_KEPT, task_id
            assert len(stored) == PROGRESS_KEPT + 6, task_id
    finally:
        await asyncio.gather(first.close(), second.close())
