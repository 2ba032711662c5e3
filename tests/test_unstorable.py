"""Issue 9, item 1: what the collector cannot store never stalls it.

Real broker (the suite's own node), real stores (SQLite and a throwaway PostgreSQL database),
the generated CollectorApp with the collector's own store handlers. Task copies are published
straight to `collector.tasks` (what the broker puts there from the `tasks` exchange, without
filling worker queues nobody drains here), results to `results`, as any client could.

Poison, interleaved with valid tasks:
- a result with attempt 2^31: refused by the store (StoreDataError) -> one dead letter each
  with reason `unstorable`, then acked;
- a task copy with `x-spectask-attempt` 2^31: read as attempt 1 (the protocol's bounds; the
  worker dead-letters such a task as `invalid_headers`), so QUEUED and no dead letter here;
- a task copy with a NUL in its type and in `x-spectask-last-error`, a result whose error text
  has a NUL: harmless, so stored with U+FFFD in place of the NUL, alike on both stores.
The collector's own `unstorable` dead letters come back to it in `collector.dead_letter`: a
spy on the store sees each one tried exactly once, and no second dead letter appears.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from generated import models
from generated.collector import RECEIVE_ROUTES as COLLECTOR_ROUTES, CollectorApp
from generated.producer import ProducerClient
from spectask.collector import add_store_handlers, store_result
from spectask.errors import PermanentTaskError
from spectask.protocol import names
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.outcomes import DUPLICATE_ID_ERROR, UNSTORABLE_ERROR
from spectask.runtime.transport import connect
from spectask.store import (
    DuplicateTaskIdError,
    ErrorDetail,
    EventKind,
    Observation,
    StoreDataError,
    StoreUnavailableError,
    TaskRecord,
    TaskStore,
    open_store,
    postgres as postgres_store,
    sqlite as sqlite_store,
)
from spectask.store.postgres import PostgresTaskStore
from spectask.store.sqlite import SqliteTaskStore
from tests.runtime_support import POLL_SECONDS, dead_letters_with, depth
from tests.status_support import (
    collector_consuming,
    producer_client,
    publish_result_bodies,
    purge_collector_copies,
)
from tests.store_support import T0, fresh_database

pytestmark = pytest.mark.asyncio

BIG = 2**31
NUL = "\x00"
TASK_TYPE = "data_analysis.statistics"
WAIT_SECONDS = 40.0


class SpyStore:
    """A TaskStore that passes every call through and counts DEAD writes tried per task id."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self.dead_tries: Counter[str] = Counter()
        self.changed = asyncio.Event()

    async def apply(self, observation: Observation) -> TaskRecord:
        if observation.kind is EventKind.DEAD:
            self.dead_tries[observation.task_id] += 1
            self.changed.set()
        return await self._store.apply(observation)

    async def apply_result(self, result: models.TaskResult) -> TaskRecord:
        return await self._store.apply_result(result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@asynccontextmanager
async def spied_collector(
    amqp_url: str, store_url: str
) -> AsyncIterator[tuple[SpyStore, list[WorkerStats]]]:
    store = await open_store(store_url)
    spy = SpyStore(store)
    app = CollectorApp()
    add_store_handlers(app, spy)
    app.collect_result(store_result(spy))
    stop = asyncio.Event()
    stats: list[WorkerStats] = []
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-unstorable")
    await purge_collector_copies(broker)
    channel = await broker.connection.channel()
    await (await channel.get_queue("dead_letter", ensure=False)).purge()
    await channel.close()
    runner = asyncio.create_task(app.run(broker, worker_id="c-unstorable", stop=stop))
    try:
        await collector_consuming(amqp_url, runner)
        yield spy, stats
    finally:
        stop.set()
        stats.append(await runner)
        await broker.close()
        await store.close()


def task_copy(task_id: str, *, attempt: int = 1, type_: str = TASK_TYPE, **headers: Any) -> Any:
    return aio_pika.Message(
        b'{"values": [1, 2, 3]}',
        content_type="application/json",
        message_id=task_id,
        type=type_,
        headers={names.ATTEMPT_HEADER: attempt, **headers},
        timestamp=datetime.now(UTC),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def result_document(task_id: str, *, attempt: int = 1, error: str | None = None) -> bytes:
    now = datetime.now(UTC).isoformat()
    document: dict[str, Any] = {
        "task_id": task_id,
        "message_type": TASK_TYPE,
        "status": "failed" if error is not None else "succeeded",
        "worker_id": "w1",
        "attempt": attempt,
        "submitted_at": now,
        "started_at": now,
        "finished_at": now,
    }
    if error is not None:
        document["error"] = {"type": "ValueError", "message": error}
    else:
        document["result"] = {"mean": 2.0}
    # Built by hand: a hostile client need not go through the model, and 2^31 is valid JSON.
    return json.dumps(document).encode()


async def unstorable_dead_letters(url: str, expected: int) -> list[Any]:
    """Wait for `expected` dead letters with reason `unstorable` in `dead_letter`, acking them."""
    return await dead_letters_with(url, "unstorable", expected, timeout=WAIT_SECONDS)


async def remaining_dead_letters(url: str) -> list[Any]:
    """Whatever is left in `dead_letter` now (acked)."""
    connection = await connect(url, robust=False)
    left: list[Any] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("dead_letter")
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            left.append(message)
    return left


async def wait_states(
    client: ProducerClient, expected: dict[str, str]
) -> dict[str, models.TaskStatusView]:
    """Until the status RPC says `expected` (reporting only the ids that differ)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        reply = await client.get_status(list(expected), timeout=5.0)
        views = {view.task_id: view for view in reply.tasks}
        wrong = {i: v for i, v in views.items() if v.state.value != expected[i]}
        if not wrong:
            return views
        shown = dict(list(wrong.items())[:5])
        assert time.monotonic() < deadline, f"{len(wrong)} ids differ, such as {shown}"
        await asyncio.sleep(POLL_SECONDS)


async def wait_tried(spy: SpyStore, ids: list[str]) -> None:
    """Until the collector tried to store the dead-letter copy of each of `ids`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(spy.dead_tries[i] for i in ids):
        spy.changed.clear()
        remaining = deadline - time.monotonic()
        assert remaining > 0, (
            f"no dead-letter copy tried for {[i for i in ids if not spy.dead_tries[i]]}"
        )
        try:
            await asyncio.wait_for(spy.changed.wait(), timeout=remaining)
        except TimeoutError:
            continue


async def test_poison_is_dead_lettered_once_and_the_rest_keep_flowing(
    amqp_url: str, store_url: str
) -> None:
    batch = uuid.uuid4().hex[:8]
    valid = [f"ok-{batch}-{n}" for n in range(300)]
    big_tasks = [f"bigtask-{batch}-{n}" for n in range(10)]
    nul_tasks = [f"nultask-{batch}-{n}" for n in range(10)]
    big_results = [f"bigresult-{batch}-{n}" for n in range(10)]
    nul_results = [f"nulresult-{batch}-{n}" for n in range(10)]
    poison: list[tuple[str, str]] = [
        *((i, "big_task") for i in big_tasks),
        *((i, "nul_task") for i in nul_tasks),
        *((i, "big_result") for i in big_results),
        *((i, "nul_result") for i in nul_results),
    ]
    async with (
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker,
        spied_collector(amqp_url, store_url) as (spy, stats),
    ):
        client = await producer_client(broker)
        channel = await broker.connection.channel(publisher_confirms=True)
        copies = channel.default_exchange
        # The poison first, each one followed by valid tasks: a stalled queue shows at once.
        for n, (task_id, kind) in enumerate(poison):
            if kind == "big_task":
                await copies.publish(task_copy(task_id, attempt=BIG), "collector.tasks")
            elif kind == "nul_task":
                message = task_copy(
                    task_id,
                    attempt=2,
                    type_=f"{TASK_TYPE}{NUL}x",
                    **{names.LAST_ERROR_HEADER: f"ValueError: bad{NUL}byte"},
                )
                await copies.publish(message, "collector.tasks")
            elif kind == "big_result":
                await publish_result_bodies(
                    broker, [(task_id, result_document(task_id, attempt=BIG))]
                )
            else:
                body = result_document(task_id, error=f"bad{NUL}byte")
                await publish_result_bodies(broker, [(task_id, body)])
            share = valid[n * len(valid) // len(poison) : (n + 1) * len(valid) // len(poison)]
            for task_id in share:
                await copies.publish(task_copy(task_id), "collector.tasks")
        await channel.close()

        # A task copy reads its attempt through the protocol's bounds (1..1,000,000): one out
        # of range is attempt 1 there, QUEUED; the worker that takes the task dead-letters it
        # as invalid_headers, which makes it DEAD. No second, `unstorable` dead letter.
        expected = {i: "QUEUED" for i in valid + nul_tasks + big_tasks}
        expected |= {i: "FAILED" for i in nul_results}
        # A result the store refused is DEAD from its own dead letter (which it can store).
        expected |= {i: "DEAD" for i in big_results}
        views = await wait_states(client, expected)

        dead = await unstorable_dead_letters(amqp_url, len(big_results))
        # Each one's copy in collector.dead_letter was tried (refused or stored) ...
        await wait_tried(spy, big_results)

    # ... and once the collector stopped (in-flight deliveries settled), nothing more happened.
    by_id = Counter(message.message_id for message in dead)
    assert by_id == Counter(big_results), by_id
    assert await remaining_dead_letters(amqp_url) == []
    assert {i: spy.dead_tries[i] for i in big_results} == dict.fromkeys(big_results, 1)
    assert all(views[i].attempts == 1 for i in big_tasks)
    for route in COLLECTOR_ROUTES:
        assert await depth(amqp_url, route.queue) == 0, route.queue
    assert stats[0].requeued == 0

    for message in dead:
        error = message.headers[names.ERROR_HEADER]
        assert error.startswith(f"cannot store task '{message.message_id}': attempt {BIG} ")
        assert "out of range" in error
        assert message.headers[names.ORIGIN_QUEUE_HEADER] == "results"
    for task_id in nul_tasks:
        assert views[task_id].message_type == f"{TASK_TYPE}\ufffdx"
    for task_id in nul_results:
        error_view = views[task_id].error
        assert error_view is not None and error_view.message == "bad\ufffdbyte"
    for task_id in big_results:
        assert views[task_id].dead_reason == "unstorable"


# --- the typed error, per backend --------------------------------------------------------


def observation(task_id: str = "t1", **fields: Any) -> Observation:
    return Observation(task_id=task_id, kind=EventKind.SUBMITTED, at=T0, **fields)


async def test_the_runtime_names_the_store_error_it_dead_letters() -> None:
    assert StoreDataError.__name__ == UNSTORABLE_ERROR
    assert DuplicateTaskIdError.__name__ == DUPLICATE_ID_ERROR
    assert issubclass(StoreDataError, PermanentTaskError)
    assert not issubclass(StoreUnavailableError, PermanentTaskError)


async def test_data_errors_are_refused_alike_and_nul_is_replaced(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        with pytest.raises(StoreDataError, match=rf"task 'big': attempt {BIG} is out of range"):
            await store.apply(observation("big", attempt=BIG))
        with pytest.raises(StoreDataError, match="task id holds a NUL"):
            await store.apply(observation(f"a{NUL}b"))
        with pytest.raises(StoreDataError, match="nan"):
            await store.apply(
                Observation(
                    task_id="nan", kind=EventKind.SUCCEEDED, at=T0, result={"x": float("nan")}
                )
            )
        stored = await store.apply(
            Observation(
                task_id="nul",
                kind=EventKind.FAILED,
                at=T0,
                message_type=f"a{NUL}b",
                error=ErrorDetail(type="ValueError", message=f"x{NUL}y", traceback=f"t{NUL}"),
            )
        )
        read = await store.get("nul")
        assert read is not None and read.error is not None and stored.error is not None
        assert read.error.message == stored.error.message == "x\ufffdy"
        assert read.error.traceback == "t\ufffd" and read.message_type == "a\ufffdb"
        # Only the unstorable one was refused: the store works on.
        assert (await store.apply(observation("fine", attempt=BIG - 1))).attempts == BIG - 1
        assert await store.get("big") is None
    finally:
        await store.close()


async def test_what_the_database_itself_refuses_is_a_data_error(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the shared checks, each backend maps its database's own refusal."""
    monkeypatch.setattr(postgres_store, "storable", lambda o: o)
    monkeypatch.setattr(sqlite_store, "storable", lambda o: o)
    store = await open_store(store_url)
    try:
        if isinstance(store, PostgresTaskStore):
            match = r"PostgreSQL refused it: integer out of range \(NumericValueOutOfRange\)"
            attempt = BIG
        else:
            match = r"SQLite refused it: .*\(OverflowError\)"
            attempt = 2**63
        with pytest.raises(StoreDataError, match=match):
            await store.apply(observation("big", attempt=attempt))
        assert (await store.apply(observation("fine"))).attempts == 1
    finally:
        await store.close()


async def test_an_unreachable_postgresql_is_transient() -> None:
    """A PostgreSQL store whose server went away (here: nothing listens on the port)."""
    with fresh_database("spectask_unstorable") as url:
        await unreachable(url)


async def unreachable(store_url: str) -> None:
    wrong = store_url.replace(":5432/", ":1/") if ":5432/" in store_url else store_url + "?port=1"
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        wrong,
        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 1},
        min_size=1,
        timeout=1.0,
        open=False,
    )
    await pool.open(wait=False)
    store = PostgresTaskStore(wrong, pool)
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            await store.apply(observation("t1"))
        assert not isinstance(raised.value, StoreDataError)
    finally:
        await store.close()
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        await PostgresTaskStore.open(wrong, connect_timeout=1)


async def test_a_locked_sqlite_file_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = await SqliteTaskStore.open(str(path), busy_timeout=0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="database is locked") as raised:
            await store.apply(observation("t1"))
        assert not isinstance(raised.value, StoreDataError)
        holder.execute("ROLLBACK")
        assert (await store.apply(observation("t1"))).attempts == 1
    finally:
        holder.close()
        await store.close()
