"""The store's queries for the dashboard and `spectask tasks`, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from spectask.store import open_store
from spectask.store.observations import EventKind, Observation
from spectask.store.postgres import PostgresTaskStore, _apply_once
from spectask.store.protocol import ChangeCursor
from spectask.store.rows import prefix_end
from spectask.store.states import TaskState
from tests.store_support import fresh_database


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
        page = await store.changed_since(ChangeCursor(start), limit=3)
        changed = page.records
        assert len(changed) == 3
        assert [r.updated_at for r in changed] == sorted(r.updated_at for r in changed)
        following = await store.changed_since(page.cursor, limit=100)
        rest = following.records
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
        assert (await store.changed_since(following.cursor)).records == []
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
        def now(cls, tz: object = None) -> Stopped:
            return cls.fromtimestamp(instant.timestamp(), UTC)

    monkeypatch.setattr("spectask.store.sqlite.datetime", Stopped)
    store = await open_store(f"sqlite:///{tmp_path}/ties.db")
    try:
        for n in range(5):
            await store.apply(Observation(f"tie-{n}", EventKind.SUBMITTED, instant))
        seen: list[str] = []
        cursor = ChangeCursor(instant - timedelta(seconds=1))
        while (page := await store.changed_since(cursor, limit=2)).records:
            assert {r.updated_at for r in page.records} == {instant}
            seen += [r.task_id for r in page.records]
            cursor = page.cursor
        assert seen == [f"tie-{n}" for n in range(5)]
    finally:
        await store.close()


async def test_a_late_commit_behind_the_cursor_is_still_read_on_postgresql() -> None:
    """PostgreSQL stamps `updated_at` at statement time: a transaction that stamps first and
    commits last lands behind a follower's (updated_at, task_id) cursor. Hold one open after
    its stamp, commit a later one, let the follower read past it, then commit the first:
    the follower's next read must deliver it, and only once."""
    with fresh_database("spectask_late") as url:
        store = await open_store(url)
        assert isinstance(store, PostgresTaskStore)
        held = await psycopg.AsyncConnection.connect(url, row_factory=dict_row)
        try:
            start = datetime.now(UTC) - timedelta(seconds=1)
            cursor = (await store.changed_since(ChangeCursor(start))).cursor
            # the store's own apply, in a transaction this test commits when it chooses
            early = await _apply_once(held, Observation("early", EventKind.SUBMITTED, start))
            assert early is not None
            await store.apply(Observation("late", EventKind.SUBMITTED, start))
            page = await store.changed_since(cursor)
            assert [r.task_id for r in page.records] == ["late"]
            assert page.cursor.updated_at > early.updated_at  # the cursor is past it
            await held.commit()
            page = await store.changed_since(page.cursor)
            assert [r.task_id for r in page.records] == ["early"]
            assert (await store.changed_since(page.cursor)).records == []
            # a transaction still open at two reads is looked for until it commits
            again = await _apply_once(held, Observation("early", EventKind.STARTED, start))
            assert again is not None
            await store.apply(Observation("late", EventKind.STARTED, start))
            page = await store.changed_since(page.cursor)
            assert [r.task_id for r in page.records] == ["late"]
            page = await store.changed_since(page.cursor)
            assert page.records == []
            await held.commit()
            page = await store.changed_since(page.cursor)
            assert [(r.task_id, r.state) for r in page.records] == [("early", TaskState.STARTED)]
        finally:
            await held.close()
            await store.close()


async def test_more_late_commits_than_a_page_are_all_read_on_postgresql() -> None:
    """Two late commits behind the cursor, read one record at a time: the cursor steps back
    to the first rather than past the second (a record may come twice; none is missed)."""
    with fresh_database("spectask_late") as url:
        store = await open_store(url)
        held = [await psycopg.AsyncConnection.connect(url, row_factory=dict_row) for _ in "ab"]
        try:
            start = datetime.now(UTC) - timedelta(seconds=1)
            cursor = (await store.changed_since(ChangeCursor(start), limit=1)).cursor
            for conn, task_id in zip(held, ("early-a", "early-b"), strict=True):
                assert await _apply_once(conn, Observation(task_id, EventKind.SUBMITTED, start))
            await store.apply(Observation("late", EventKind.SUBMITTED, start))
            page = await store.changed_since(cursor, limit=1)
            assert [r.task_id for r in page.records] == ["late"]
            for conn in held:
                await conn.commit()
            seen: list[str] = []
            while (page := await store.changed_since(page.cursor, limit=1)).records:
                seen += [r.task_id for r in page.records]
            assert {"early-a", "early-b"} <= set(seen)
        finally:
            for conn in held:
                await conn.close()
            await store.close()
