"""The store's migrations stay frozen, and the schema accepts every state the code can store.

A released step is never run again on a database that applied it, so editing one (by hand, or
by computing its SQL from an enum that later grew) leaves old and new databases disagreeing
without a word. Two guards: a pinned digest of every released step's SQL (edit one and the
test says to append a new step instead), and a real write of every state the state machine
can produce on both backends (add a state without a step that widens the CHECK and it fails).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from spectask.store import EventKind, Observation, TaskState, open_store, state_of
from spectask.store.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION_POSTGRES,
    SCHEMA_VERSION_SQLITE,
    Migration,
)
from spectask.store.states import STATE_OF_KIND, STORED_STATES, storage_code

# version -> sha256 of its SQL (see `digest`), pinned from the SQL databases really got (step 1:
# the text the enum-computed version produced, byte for byte). A new step adds a line.
RELEASED = {
    1: "24ea798c5e9d74d0e0ad360f38db4b4ef4d5c8844bbd91a7bfd899200c4781a8",
    2: "866a6f2317309bbca078c076826323ce79011290655f150f34f10a06427ba207",
    3: "509d3c3615717cefb2242339775253b753393dc71c61dacea00a9f9a0ed2935a",
    4: "3b904e5d5afc73dcc2d19ce547212caf482210fa2878a6a19c46a44752a9c1bf",
    5: "783b4a522afe71e5c0cb44d7dad192f35c429916a580b87a8f0693a092b00a2e",
    6: "ee5182c6af9d1c48a2a1f4cbb031e6de32e8080a4cc86dc84a580aa2d14d6331",
    7: "90a040801290e09abcadc9c5b5d4f4613283e6bf118c740f11416345391860a1",
}
# The schema_version table is created (IF NOT EXISTS) by every open: as frozen as a step.
SCHEMA_VERSION_DIGEST = "7086e9b01b459d720d1dd29bb8726cdf664a576bbf1cb495906cd0f5c8396530"
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def digest(step: Migration) -> str:
    """The sha256 of what a step runs on both backends (its description may change)."""
    document = json.dumps([step.version, list(step.sqlite), list(step.postgres)])
    return hashlib.sha256(document.encode()).hexdigest()


@pytest.mark.parametrize("step", MIGRATIONS, ids=lambda step: f"step{step.version}")
def test_a_released_step_never_changes(step: Migration) -> None:
    if step.version not in RELEASED:
        pytest.fail(
            f"step {step.version} is not pinned: once it is released, add "
            f"{step.version}: {digest(step)!r} to RELEASED",
            pytrace=False,
        )
    assert digest(step) == RELEASED[step.version], (
        f"released step {step.version} changed: databases that applied it never see the "
        "change; restore it and append a new migration instead"
    )


def test_every_pinned_step_is_still_there() -> None:
    assert sorted(RELEASED) == [step.version for step in MIGRATIONS][: len(RELEASED)]
    assert [step.version for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_the_schema_version_table_never_changes() -> None:
    document = json.dumps([SCHEMA_VERSION_SQLITE, SCHEMA_VERSION_POSTGRES])
    assert hashlib.sha256(document.encode()).hexdigest() == SCHEMA_VERSION_DIGEST, (
        "the schema_version table changed: existing databases keep the old one"
    )


def test_the_stored_states_are_the_ones_the_state_machine_reaches() -> None:
    assert set(STATE_OF_KIND.values()) == set(STORED_STATES)
    assert TaskState.UNKNOWN not in STORED_STATES


async def test_every_state_the_state_machine_can_store_is_accepted(store_url: str) -> None:
    """One task per event kind, each reaching its state from nothing, written for real."""
    store = await open_store(store_url)
    try:
        prefix = f"states-{uuid.uuid4().hex[:8]}"
        for kind, state in STATE_OF_KIND.items():
            seen = Observation(task_id=f"{prefix}-{kind.value}", kind=kind, at=AT)
            await store.apply(seen)
            assert state_of(await store.get(seen.task_id)) is state, kind
        counts = await store.counts_by_state()
        assert {state for state, count in counts.items() if count} == set(STATE_OF_KIND.values())
    finally:
        await store.close()


def insert_raw(store_url: str, state: str) -> None:
    """A row written past the store, with the plain driver, in state `state`."""
    values = (f"raw-{uuid.uuid4().hex[:8]}", state, 1, AT.isoformat())
    statement = "INSERT INTO tasks (task_id, state, attempts, updated_at) VALUES (?, ?, ?, ?)"
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement, values)
        return
    with psycopg.connect(store_url) as pg:
        pg.execute(statement.replace("?", "%s"), values)


async def test_the_schema_refuses_a_state_it_does_not_know(store_url: str) -> None:
    """The CHECK constraint is really there (so the test above proves something)."""
    await (await open_store(store_url)).close()
    insert_raw(store_url, storage_code(TaskState.QUEUED))
    for state in ("paused", storage_code(TaskState.UNKNOWN), "QUEUED"):
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.CheckViolation)):
            insert_raw(store_url, state)


def test_every_event_kind_has_a_state() -> None:
    assert set(STATE_OF_KIND) == set(EventKind)
