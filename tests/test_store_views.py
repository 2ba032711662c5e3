"""The store's queries for the dashboard and `spectask tasks`, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spectask.store import open_store
from spectask.store.observations import EventKind, Observation
from spectask.store.rows import prefix_end
from spectask.store.states import TaskState


async def test_counts_by_type_changed_since_and_prefixes(store_url: str) -> None:
    store = await open_store(store_url)
    now = datetime.now(UTC)
    try:
        start = now - timedelta(seconds=1)
        for task_id, kind in [("a-1", EventKind.SUBMITTED), ("a-2", EventKind.SUCCEEDED)]:
            await store.apply(Observation(task_id, kind, now, message_type="t.x"))
        await store.apply(Observation("b-1", EventKind.SUBMITTED, now))  # no type known
        # ids around the prefix in code-point order must stay out of an `a-` search
        for task_id in ("a", "a,", "a.", "a-\U0010ffff", "A-1", "\U0010ffffz"):
            await store.apply(Observation(task_id, EventKind.SUBMITTED, now, message_type="t.x"))
        counts = await store.counts_by_type()
        assert counts["t.x"][TaskState.QUEUED] == 7 and counts["t.x"][TaskState.SUCCEEDED] == 1
        assert counts[""][TaskState.QUEUED] == 1
        assert all(len(per_state) == 7 for per_state in counts.values())
        found = sorted(r.task_id for r in await store.list(id_prefix="a-"))
        assert found == ["a-1", "a-2", "a-\U0010ffff"]
        changed = await store.changed_since(start, limit=3)
        assert len(changed) == 3
        assert [r.updated_at for r in changed] == sorted(r.updated_at for r in changed)
        last = changed[-1]
        rest = await store.changed_since(last.updated_at, limit=100, after_id=last.task_id)
        assert {r.task_id for r in changed} | {r.task_id for r in rest} == {
            "a-1",
            "a-2",
            "b-1",
            "a",
            "a,",
            "a.",
            "a-\U0010ffff",
            "A-1",
            "\U0010ffffz",
        }
        assert len(changed) + len(rest) == 9  # each change read once
        assert await store.changed_since(rest[-1].updated_at, after_id=rest[-1].task_id) == []
        assert [r.task_id for r in await store.list(id_prefix="\U0010ffff")] == ["\U0010ffffz"]
    finally:
        await store.close()


def test_prefix_end_is_the_next_string_up() -> None:
    assert prefix_end("b1-") == "b1."
    assert prefix_end("z") == "{"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"


async def test_changes_sharing_a_timestamp_are_each_read_once_across_pages(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five records written at one instant, read two at a time: the (updated_at, task_id)
    cursor reads all five once. With updated_at alone, the dashboard's follower skipped the
    three that shared the second page's timestamp. (SQLite: its clock is Python's, which the
    test can stop; PostgreSQL orders by the same (updated_at, task_id) index.)"""
    instant = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    class Stopped(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Stopped:  # type: ignore[override]
            return cls.fromtimestamp(instant.timestamp(), UTC)

    monkeypatch.setattr("spectask.store.sqlite.datetime", Stopped)
    store = await open_store(f"sqlite:///{tmp_path}/ties.db")
    try:
        for n in range(5):
            await store.apply(Observation(f"tie-{n}", EventKind.SUBMITTED, instant))
        seen: list[str] = []
        cursor, cursor_id = instant - timedelta(seconds=1), ""
        while page := await store.changed_since(cursor, limit=2, after_id=cursor_id):
            assert {r.updated_at for r in page} == {instant}
            seen += [r.task_id for r in page]
            cursor, cursor_id = page[-1].updated_at, page[-1].task_id
        assert seen == [f"tie-{n}" for n in range(5)]
    finally:
        await store.close()
