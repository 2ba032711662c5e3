"""A task's batch is kept in the store (migration 6), so listing a batch is an index walk.

The label comes from the id (`spectask.store.batches.batch_of`) when a row is first written,
and from migration 6's SQL for rows written before it: both must say the same for every id,
on both backends, and listing by batch must find exactly the batch's tasks, newest first.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from spectask.runtime.producer import BATCH_RUN_CHARS, batch_task_ids
from spectask.store import EventKind, Observation, TaskState, open_store
from spectask.store.batches import RUN_HEX_DIGITS, batch_of
from spectask.store.migrations import MIGRATIONS

RUN = "0123456789ab"
IDS = {
    f"lbl-{RUN}-000001": "lbl",
    f"a-b-{RUN}-1234567": "a-b",  # a label with dashes, an index past 999,999
    f"x--{RUN}-000001": "x-",
    f"lbl-{RUN}-00001": None,  # five index digits: not produce's shape
    f"lbl-{RUN.upper()}-000001": None,  # the run is lower-case hex
    f"lbl-{RUN}-000001x": None,
    f"-{RUN}-000001": None,  # no label
    f"{RUN}-000001": None,
    "lbl-000001": None,  # a hand-made id: no run
    "5f0c1e2a9b3d4c6e8f7a1b2c3d4e5f60": None,  # a plain task id
}
FILL = next(step for step in MIGRATIONS if step.version == 6)


def test_the_rule_matches_the_ids_produce_gives_a_batch() -> None:
    assert RUN_HEX_DIGITS == BATCH_RUN_CHARS
    for label in ("b1", "night-run", "x_y"):
        assert {batch_of(task_id) for task_id in batch_task_ids(label, 3)} == {label}


@pytest.mark.parametrize(("task_id", "batch"), IDS.items())
def test_batch_of(task_id: str, batch: str | None) -> None:
    assert batch_of(task_id) == batch


def stored_batches(store_url: str, refill: bool) -> dict[str, str | None]:
    """Each row's batch column; `refill`: cleared, then filled by migration 6's SQL."""
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            if refill:
                conn.execute("UPDATE tasks SET batch = NULL")
                conn.execute(FILL.sqlite[1])
            return dict(conn.execute("SELECT task_id, batch FROM tasks").fetchall())
    with psycopg.connect(store_url) as pg:
        if refill:
            pg.execute("UPDATE tasks SET batch = NULL")
            pg.execute(FILL.postgres[1])
        return dict(pg.execute("SELECT task_id, batch FROM tasks").fetchall())


async def test_written_and_migrated_rows_get_the_same_batch(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        now = datetime.now(UTC)
        for task_id in IDS:
            await store.apply(Observation(task_id, EventKind.SUBMITTED, now, message_type="a.x"))
    finally:
        await store.close()
    assert stored_batches(store_url, refill=False) == IDS
    assert stored_batches(store_url, refill=True) == IDS


async def test_listing_a_batch_finds_its_tasks_newest_first(store_url: str) -> None:
    ours = batch_task_ids("night", 4) + batch_task_ids("night", 2)  # two runs of one label
    others = batch_task_ids("nightly", 2) + batch_task_ids("nigh", 2) + [f"night-{RUN}-00001"]
    store = await open_store(store_url)
    try:
        began = datetime.now(UTC)
        for n, task_id in enumerate(ours + others):
            at = began + timedelta(milliseconds=n)
            await store.apply(Observation(task_id, EventKind.SUBMITTED, at, message_type="a.x"))
        await store.apply(
            Observation(ours[1], EventKind.SUCCEEDED, began, message_type="a.x", result={})
        )
        listed = [record.task_id for record in await store.list(batch="night", limit=100)]
        assert sorted(listed) == sorted(ours)
        assert listed[0] == ours[1]  # updated last: first
        done = await store.list(batch="night", state=TaskState.SUCCEEDED)
        assert [record.task_id for record in done] == [ours[1]]
        assert [r.task_id for r in await store.list(batch="night", limit=2, offset=5)] == [
            listed[5]
        ]
        assert await store.list(batch="nigh-") == []
    finally:
        await store.close()
