"""Issue 9 item 4 / issue 12 item 5: a task id reused by a DIFFERENT task is refused visibly
(the end-to-end case is tests/test_contract_items.py's item 5; these are the store's and the
producer's parts).

Before: the second task ran, its result was dropped by the store (first outcome kept) and its
worker_id switched in, without a word. Now the collector compares which task each message is
about (`spectask.runtime.digest`: message type + body) with the task it stored under the id:
the second task's copy and its result become dead letters with reason `duplicate_id` (shown
by `spectask dlq`), the first task's record is untouched. The same task again (same type and
body: a resubmit, a redelivery) is the ordinary at-least-once case: no dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from generated import models
from generated.worker import RECEIVE_ROUTES
from spectask.errors import TaskValidationError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.digest import task_digest
from spectask.store import DuplicateTaskIdError, EventKind, Observation, TaskStore, open_store
from tests.status_support import producer_client

pytestmark = pytest.mark.timeout(120)
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
DATA = [route for route in RECEIVE_ROUTES if route.task_type == "data_analysis"]


def observed(task_id: str, body: bytes, kind: EventKind = EventKind.SUBMITTED) -> Observation:
    message_type = "data_analysis.statistics"
    return Observation(
        task_id=task_id,
        kind=kind,
        at=AT,
        message_type=message_type,
        digest=task_digest(message_type, body),
    )


async def test_the_store_refuses_another_task_under_a_used_id(store_url: str) -> None:
    store: TaskStore = await open_store(store_url)
    try:
        first = await store.apply(observed("t1", b'{"values":[1]}'))
        again = await store.apply(observed("t1", b'{"values":[1]}', EventKind.STARTED))
        assert again.task_digest == first.task_digest is not None
        with pytest.raises(DuplicateTaskIdError, match="already belongs to another task"):
            await store.apply(observed("t1", b'{"values":[2]}', EventKind.SUCCEEDED))
        stored = await store.get("t1")
        assert stored is not None and stored.state.value == "STARTED"
    finally:
        await store.close()


@pytest.mark.parametrize("task_id", ["", "a\0b", "x" * 256, "é" * 128])
async def test_a_task_id_the_protocol_does_not_allow_is_refused(any_url: str, task_id: str) -> None:
    broker = await Broker.connect(RuntimeConfig(amqp_url=any_url), name="test-dup-ids")
    async with broker:
        client = await producer_client(broker)
        payload = models.DataStatistics(values=[1.0])
        with pytest.raises(TaskValidationError, match="1 to 255 bytes of UTF-8 with no NUL"):
            await client.submit_data_statistics(payload, task_id=task_id)


async def test_an_event_of_another_task_under_a_used_id_is_refused(store_url: str) -> None:
    """Events say which task they are about too: a duplicate's `retrying` or `started` does
    not move the first task's record (nor switch its worker)."""
    store: TaskStore = await open_store(store_url)
    try:
        await store.apply(observed("t2", b'{"values":[1]}'))
        event = models.TaskEvent(
            task_id="t2",
            event=models.EventKind.STARTED,
            at=AT,
            worker_id="w-other",
            task_digest=task_digest("data_analysis.statistics", b'{"values":[2]}'),
        )
        with pytest.raises(DuplicateTaskIdError):
            await store.apply_event(event)
        stored = await store.get("t2")
        assert stored is not None and stored.worker_id is None
    finally:
        await store.close()
