"""The collector writes results into the task store and answers the status RPC from it.

Real broker, real stores (SQLite file; PostgreSQL when one answers, see tests/store_support.py).
QUEUED comes from the broker's copy of each task (collector.tasks), RETRYING from the worker's
`retrying` event, DEAD from the copy of each dead letter (collector.dead_letter). STARTED is not
published (it would cost the success path a publish per task).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from generated import models
from generated.producer import ProducerClient
from generated.worker import WorkerApp
from spectask.errors import PermanentTaskError, RpcTimeoutError
from spectask.runtime import consumer
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.store import TaskState
from tests.runtime_support import POLL_SECONDS, pass_time, running
from tests.status_support import (
    collector,
    new_id,
    producer_client,
    publish_events,
    publish_results,
    wait_states,
)

pytestmark = pytest.mark.asyncio


async def test_the_rpc_times_out_clearly_without_a_collector(any_url: str) -> None:
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        started = time.monotonic()
        with pytest.raises(RpcTimeoutError, match=r"no collector answered within 0\.5 s; is "):
            await client.get_status([new_id("none")], timeout=0.5)
        assert time.monotonic() - started < 2.0


async def test_states_over_rpc_duplicates_and_restart(any_url: str, store_url: str) -> None:
    ok, bad, unknown = new_id("ok"), new_id("bad"), new_id("unknown")
    expected = {ok: "SUCCEEDED", bad: "FAILED", unknown: "UNKNOWN"}
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url) as (store, _):
            await publish_results(broker, [(ok, "succeeded"), (bad, "failed"), (ok, "succeeded")])
            views = await wait_states(client, expected)
            assert views[ok].result == {"mean": 2.0}
            error = views[bad].error
            assert error is not None and error.type == "ValueError"
            assert [view.task_id for view in (await client.get_status([unknown, ok])).tasks] == [
                unknown,
                ok,
            ]
            await asyncio.sleep(0.5)  # the duplicate has been applied too
            listed = await store.list(message_type="data_analysis.statistics", limit=1000)
            assert [r.task_id for r in listed].count(ok) == 1
            assert (await store.get(ok)) is not None
            assert (await store.get(ok)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
        async with collector(any_url, store_url):  # a restart keeps the history
            await wait_states(client, expected)


async def test_a_store_outage_requeues_results_instead_of_dead_lettering(
    any_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the collector backs off 1 s, then 2 s, before it gives a result back: the length of the
    # backoff is not what this checks, that it requeues (and never dead-letters) is
    monkeypatch.setattr(consumer, "REQUEUE_BACKOFF_SECONDS", 0.05)
    task_id = new_id("outage")
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, url, fail_first=2) as (_, stats):
            await publish_results(broker, [(task_id, "succeeded")])
            await wait_states(client, {task_id: "SUCCEEDED"}, timeout=20.0)
        assert stats[0].requeued >= 2
        assert stats[0].dead_lettered == 0


async def test_rpc_latency_under_load(any_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    ids = [new_id("load") for _ in range(2000)]
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, url):
            load = asyncio.create_task(publish_results(broker, [(i, "succeeded") for i in ids]))
            samples = []
            for n in range(1000):
                started = time.perf_counter()
                reply = await client.get_status([ids[n % len(ids)]], timeout=5.0)
                samples.append((time.perf_counter() - started) * 1000)
                assert len(reply.tasks) == 1
            await load
            cuts = statistics.quantiles(samples, n=100)
            print(
                f"\nstatus RPC round trip under load: p50 {cuts[49]:.2f} ms, p99 {cuts[98]:.2f} ms"
            )
            assert cuts[98] < 1000


async def test_a_bare_string_is_refused_not_split_into_characters(any_url: str) -> None:
    """`get_status("abc")` type-checks (a str is a Sequence[str]); the request schema refuses it."""
    from spectask.errors import TaskValidationError
    from spectask.runtime.broker import Broker
    from spectask.runtime.config import RuntimeConfig

    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await ProducerClient.open(broker)
        with pytest.raises(TaskValidationError, match="task_ids"):
            await client.get_status("abc", timeout=1.0)


@asynccontextmanager
async def data_worker(any_url: str, fail_once: set[str], doomed: set[str]) -> AsyncIterator[None]:
    """A data_analysis worker: ids in `fail_once` fail their first attempt, `doomed` ones fail
    permanently; any other task (left by another test) just succeeds."""
    app = WorkerApp()

    async def handle(payload: object, context: TaskContext) -> dict[str, object]:
        if context.task_id in doomed:
            raise PermanentTaskError("these numbers are hopeless")
        if context.task_id in fail_once and context.attempt == 1:
            raise ConnectionError("flaky upstream")
        return {"attempt": context.attempt}

    app.process_data_aggregate(handle)
    app.process_data_statistics(handle)
    app.process_data_detect_patterns(handle)
    async with running(any_url, app, "w-states", ["data_analysis"]):
        yield


async def test_queued_retrying_succeeded_and_dead(any_url: str, store_url: str) -> None:
    """QUEUED with no worker; then RETRYING after a failed first attempt, SUCCEEDED at attempt 2;
    a permanent failure ends DEAD with its reason. No extra publish on the success path."""
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url) as (_, stats):
            flaky = await client.submit_data_statistics(
                models.DataStatistics(values=[1.0, 2.0]), task_id=new_id("flaky")
            )
            doomed = await client.submit_data_statistics(
                models.DataStatistics(values=[3.0]), task_id=new_id("doomed")
            )
            views = await wait_states(client, {flaky: "QUEUED", doomed: "QUEUED"})
            assert views[flaky].attempts == 1 and views[flaky].submitted_at is not None
            assert views[flaky].message_type == "data_analysis.statistics"

            seen: list[str] = []
            skipped_retry = False
            async with data_worker(any_url, fail_once={flaky}, doomed={doomed}):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    reply = await client.get_status([flaky], timeout=5.0)
                    state = reply.tasks[0].state.value
                    if not seen or seen[-1] != state:
                        seen.append(state)
                    if state == "SUCCEEDED":
                        break
                    if state == "RETRYING" and not skipped_retry:
                        await pass_time(any_url, 1.2)  # its retry tier's wait (0.9 to 1.1 s)
                        skipped_retry = True
                    await asyncio.sleep(POLL_SECONDS)
                views = await wait_states(client, {flaky: "SUCCEEDED", doomed: "DEAD"})
            # RETRYING is seen during the 1 s backoff (skipped only then, on the in-memory broker)
            assert seen[0] == "QUEUED" and "RETRYING" in seen and seen[-1] == "SUCCEEDED", seen
            assert views[flaky].attempts == 2 and views[flaky].result == {"attempt": 2}
            assert views[doomed].dead_reason == "permanent"
            error = views[doomed].error
            assert error is not None and "hopeless" in error.message

            # stale and duplicated news never moves a task backwards
            stale = [
                {"task_id": flaky, "event": "retrying", "attempt": 1, "message": "old"},
                {"task_id": flaky, "event": "started", "attempt": 2},
                {"task_id": doomed, "event": "progress", "attempt": 1, "message": "old"},
                {"task_id": doomed, "event": "retrying", "attempt": 1, "message": "old"},
            ]
            marker = new_id("marker")
            await publish_events(broker, [*stale, *stale, {"task_id": marker, "event": "started"}])
            await wait_states(client, {marker: "STARTED"})
            await asyncio.sleep(0.3)
            views = await wait_states(client, {flaky: "SUCCEEDED", doomed: "DEAD"})
            assert views[flaky].attempts == 2 and views[doomed].dead_reason == "permanent"
        assert stats[0].dead_lettered == 0
