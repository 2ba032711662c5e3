"""Result modes (`x-spectask-results`): what each one guarantees, on both transports.

- confirmed: one persistent result per task, a valid TaskResult although the runtime no longer
  validates what it builds itself;
- batched: the results of many tasks in persistent ResultBatch messages, every task acked only
  after its batch is confirmed — a worker killed with -9 while its results wait in a batch
  loses nothing: every task is redelivered and its result published by the next worker;
- none: a success's result transient (not persistent), failures still confirmed;
- the spec's extension, the collector's intake of batches and the status RPC that answers
  each task of a batch; acks of consecutive deliveries in one `multiple=True` frame.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from generated import models as app_models
from spectask.codegen.cli import main as generate
from spectask.protocol import models
from spectask.protocol.names import RESULT_BATCH_MESSAGE_TYPE, RESULT_MESSAGE_TYPE
from spectask.runtime.acks import AckWindow
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.topology import ResultMode
from spectask.runtime.transport import connect
from tests.runtime_support import (
    POLL_SECONDS,
    InProcessWorkers,
    Names,
    Numbers,
    depth,
    drain,
    make_names,
)
from tests.status_support import collector, new_id, producer_client, wait_states

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
TASKS = 40


def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    if payload.fail:
        raise ValueError(payload.fail)
    return {"sum": sum(payload.values)}


async def submit(broker: Broker, names: Names, count: int, fail_every: int = 0) -> list[str]:
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    payloads = [
        Numbers(values=[i, 1], fail="boom" if fail_every and i % fail_every == 0 else None)
        for i in range(count)
    ]
    return await publisher.submit_many([publisher.build(names.send, p) for p in payloads])


def results_of(messages: list[Any]) -> list[models.TaskResult]:
    """Every TaskResult in the drained messages, single or batched, validated by the schema."""
    found: list[models.TaskResult] = []
    for message in messages:
        if message.type == RESULT_BATCH_MESSAGE_TYPE:
            found += models.ResultBatch.model_validate_json(message.body).results
        else:
            assert message.type == RESULT_MESSAGE_TYPE
            found.append(models.TaskResult.model_validate_json(message.body))
    return found


@pytest.fixture
async def broker(any_url: str) -> AsyncIterator[Broker]:
    config = RuntimeConfig(amqp_url=any_url, prefetch=16, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-result-modes") as connected:
        yield connected


async def test_confirmed_results_are_valid_task_results_unvalidated_by_the_runtime(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names()
    ids = await submit(broker, names, 10, fail_every=5)
    await workers.start(broker, names, total, consuming=True)
    messages = await drain(any_url, names.result_queue, 10)
    results = results_of(messages)  # raises if the runtime built one the schema refuses
    assert sorted(r.task_id for r in results) == sorted(ids)
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)
    by_status = {r.status.value for r in results}
    assert by_status == {"succeeded", "failed"}


async def test_batched_results_come_in_few_persistent_batches_and_every_task_once(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names(result_mode=ResultMode.BATCHED)
    ids = await submit(broker, names, TASKS, fail_every=10)
    stop = asyncio.Event()
    _, worker = await workers.start(broker, names, total, stop, consuming=True)
    failed = TASKS // 10
    # the failures go their own confirmed way (a failed result each, and a dead letter)
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    while len(results_of(messages)) < TASKS:
        assert time.monotonic() < deadline, f"{len(results_of(messages))} of {TASKS} results"
        messages += await drain(any_url, names.result_queue, 1)
    stop.set()
    stats = await worker
    results = results_of(messages)
    assert sorted(r.task_id for r in results) == sorted(ids)
    batches = [m for m in messages if m.type == RESULT_BATCH_MESSAGE_TYPE]
    assert batches and len(batches) < TASKS - failed, "successes must share batches"
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)
    singles = results_of([m for m in messages if m.type == RESULT_MESSAGE_TYPE])
    assert {r.status.value for r in singles} == {"failed"}
    assert stats.succeeded == TASKS - failed and stats.requeued == 0
    assert await depth(any_url, names.queue) == 0


async def test_none_mode_results_are_transient_and_failures_stay_confirmed(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names(result_mode=ResultMode.NONE)
    ids = await submit(broker, names, 10, fail_every=5)
    await workers.start(broker, names, total, consuming=True)
    messages = await drain(any_url, names.result_queue, 10)
    results = {r.task_id: r for r in results_of(messages)}
    assert sorted(results) == sorted(ids)
    modes = {results[m.message_id].status.value: m.delivery_mode for m in messages}
    assert modes == {
        "succeeded": aio_pika.DeliveryMode.NOT_PERSISTENT,
        "failed": aio_pika.DeliveryMode.PERSISTENT,
    }
    assert await depth(any_url, names.dead_queue) == 2  # the failures' dead letters, confirmed


@asynccontextmanager
async def tracked_deliveries(url: str, count: int) -> AsyncIterator[tuple[Names, list[Any]]]:
    """`count` tasks delivered on one channel (sorted by tag, tracked by `window`), unacked;
    the consumer is cancelled and the channel closed after the block (unacked ones go back)."""
    names = make_names()
    async with await Broker.connect(RuntimeConfig(amqp_url=url)) as broker:
        await submit(broker, names, count)
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        queue = await channel.get_queue(names.queue)
        delivered: list[Any] = []
        all_of_them = asyncio.get_running_loop().create_future()

        async def take(message: Any) -> None:
            delivered.append(message)
            if len(delivered) == count:
                all_of_them.set_result(None)

        tag = await queue.consume(take)
        await asyncio.wait_for(all_of_them, 20)
        delivered.sort(key=lambda m: m.delivery_tag)
        yield names, delivered
        await queue.cancel(tag)  # fails if the broker closed the channel
        assert not channel.is_closed
        await channel.close()


async def test_consecutive_acks_go_out_as_one_multiple_frame(any_url: str) -> None:
    """Six deliveries; 1-3 and 5 acked in one loop turn: a multiple ack up to 3, a single one
    for 5; 4 and 6 stay unacked, so closing the channel gives exactly those two back."""
    window = AckWindow()
    async with tracked_deliveries(any_url, 6) as (names, delivered):
        for message in delivered:
            window.track(message)
        await asyncio.gather(*(window.ack(delivered[i]) for i in (0, 1, 2, 4)))
        assert (window.frames, window.settled) == (2, 4)
    deadline = time.monotonic() + 10
    while await depth(any_url, names.queue) != 2:
        assert time.monotonic() < deadline, "the two unacked deliveries never came back"
        await asyncio.sleep(POLL_SECONDS)


class GatedAck:
    """A delivery whose ack waits for `gate` (the rest is the delivery's own)."""

    def __init__(self, message: Any, gate: asyncio.Event) -> None:
        self._message = message
        self._gate = gate
        self.reached = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)

    async def ack(self, multiple: bool = False) -> None:
        self.reached.set()
        await self._gate.wait()
        await self._message.ack(multiple=multiple)


async def test_acks_that_come_while_frames_are_sent_go_out_after_them(any_url: str) -> None:
    """1, 2 and 4 are being acked (a multiple up to 2, then 4 alone) when 3 and 5 come: their
    `multiple=True` up to 5 must not reach the broker before the ack of 4, which it would refuse
    (an unknown tag closes the channel). All five are acked; nothing comes back."""
    window = AckWindow()
    async with tracked_deliveries(any_url, 5) as (names, delivered):
        for message in delivered:
            window.track(message)
        gate = asyncio.Event()
        held = GatedAck(delivered[3], gate)  # the first sender stops before the ack of 4
        first = asyncio.gather(*(window.ack(m) for m in (delivered[0], delivered[1], held)))
        await held.reached.wait()
        later = asyncio.gather(window.ack(delivered[2]), window.ack(delivered[4]))
        for _ in range(5):  # time for a second sender, if there were one, to send its frame
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, later)
        assert window.settled == 5
    assert await depth(any_url, names.queue) == 0


class CancelledAck:
    """A delivery whose ack frame is cancelled, as aiormq cancels the frames it had not written
    when its connection closed."""

    def __init__(self, message: Any) -> None:
        self._message = message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)

    async def ack(self, multiple: bool = False) -> None:
        raise asyncio.CancelledError


async def test_a_cancelled_ack_or_caller_leaves_no_other_delivery_unacked(any_url: str) -> None:
    """1 and 3 are acked in one flush (2 stays unacked): the frame of 1 is cancelled, and the
    caller of 3 is cancelled while it waits. 3 is acked all the same; closing the channel gives
    back exactly 1 and 2. Before, the flush died with the first cancel, the ack of 3 was never
    sent and its caller returned as if it had been (CI's proxy-cut chaos row: deliveries held
    unacked until the collector stopped)."""
    window = AckWindow()
    async with tracked_deliveries(any_url, 3) as (names, delivered):
        for message in delivered:
            window.track(message)
        lost = asyncio.ensure_future(window.ack(CancelledAck(delivered[0])))
        third = asyncio.ensure_future(window.ack(delivered[2]))
        await asyncio.sleep(0)  # both joined the one flush
        third.cancel()
        await lost
        with pytest.raises(asyncio.CancelledError):
            await third
        deadline = time.monotonic() + 10
        while window.settled < 1:
            assert time.monotonic() < deadline, "the ack of 3 was never sent"
            await asyncio.sleep(POLL_SECONDS)
        assert window.settled == 1
    deadline = time.monotonic() + 10
    while await depth(any_url, names.queue) != 2:
        assert time.monotonic() < deadline, "1 and 2 never came back"
        await asyncio.sleep(POLL_SECONDS)


async def test_an_ack_of_a_closed_channel_does_not_stop_the_acks_of_a_live_one(
    any_url: str,
) -> None:
    """A delivery of a channel that has since closed (a reconnect's leftover) and one of the
    live channel are acked in one flush: the live one is acked, the stale one is only logged
    (the broker took it back). Before, aio-pika's `message.channel` raised
    ChannelInvalidStateError while the flush sorted them by channel, so the live delivery's
    ack was never sent and it held its prefetch slot until the worker stopped (CI's cluster
    clean-stop row)."""
    window = AckWindow()
    async with tracked_deliveries(any_url, 2) as (names, delivered):
        connection = await connect(any_url, robust=False)
        async with connection:
            other = await connection.channel()
            message = aio_pika.Message(b"{}", message_id="stale")
            await other.default_exchange.publish(message, routing_key=names.queue)
            queue = await other.get_queue(names.queue)
            stale = None
            deadline = time.monotonic() + 10
            while stale is None:
                assert time.monotonic() < deadline, "the stale delivery never came"
                stale = await queue.get(fail=False)
            for delivery in (stale, *delivered):
                window.track(delivery)
            await other.close()  # the broker takes `stale` back
            await asyncio.gather(window.ack(stale), window.ack(delivered[0]))
            assert (window.frames, window.settled) == (1, 1)
    deadline = time.monotonic() + 10
    while await depth(any_url, names.queue) != 2:  # the stale one and the second, unacked
        assert time.monotonic() < deadline, "the unacked deliveries never came back"
        await asyncio.sleep(POLL_SECONDS)


async def test_a_collector_stores_every_result_of_a_batch_and_status_answers_each(
    any_url: str, store_url: str
) -> None:
    ids = [new_id(f"batch{i}") for i in range(3)]
    now = datetime.now(UTC)
    batch = app_models.ResultBatch.model_validate(
        {
            "results": [
                {
                    "task_id": task_id,
                    "message_type": "data_analysis.statistics",
                    "status": "failed" if i == 2 else "succeeded",
                    "worker_id": "w1",
                    "attempt": 1,
                    "finished_at": now,
                    "result": {"mean": float(i)} if i < 2 else None,
                    "error": {"type": "ValueError", "message": "bad"} if i == 2 else None,
                }
                for i, task_id in enumerate(ids)
            ]
        }
    )
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url):
            channel = await broker.connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("results", ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    batch.model_dump_json(exclude_none=True).encode(),
                    content_type="application/json",
                    message_id=new_id("batch"),
                    type=RESULT_BATCH_MESSAGE_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                "result_batch",
            )
            await channel.close()
            views = await wait_states(
                client, {ids[0]: "SUCCEEDED", ids[1]: "SUCCEEDED", ids[2]: "FAILED"}
            )
            assert views[ids[1]].result == {"mean": 1.0}


def test_the_spec_extension_is_checked_and_generated(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    for source in (ROOT / "spec").glob("*.yaml"):
        (spec / source.name).write_text(source.read_text())
    common = spec / "common.asyncapi.yaml"
    text = common.read_text()
    marker = "        x-spectask-policy:\n          maxAttempts: 3\n"
    assert marker in text
    common.write_text(text.replace(marker, "        x-spectask-results: batched\n" + marker, 1))
    out = tmp_path / "out"
    assert generate(["--spec", str(spec), "--out", str(out)]) == 0
    topology = (out / "topology.py").read_text()
    assert "result_mode=ResultMode.BATCHED" in topology
    common.write_text(text.replace(marker, "        x-spectask-results: sometimes\n" + marker, 1))
    result = subprocess.run(
        [sys.executable, "-m", "spectask.codegen", "--spec", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "x-spectask-results must be one of confirmed, batched, none, got 'sometimes'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


# --- kill -9 mid-batch: a real worker process, on RabbitMQ only ---------------------------------


def _start_batch_worker(url: str, base: str, handled: Path, batch_ms: float) -> Any:
    env = {
        **os.environ,
        "AMQP_URL": url,
        "SPECTASK_PREFETCH": "50",
        "SPECTASK_RESULT_BATCH_SIZE": "1000",
        "SPECTASK_RESULT_BATCH_MS": str(batch_ms),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.batch_worker", base, str(handled)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if b"consuming" not in line:
        _end(process)
        raise AssertionError((line + process.stdout.read()).decode(errors="replace"))
    return process


def _end(process: Any, *, kill: bool = True) -> None:
    """SIGKILL (or SIGTERM) the worker and reap it, its output pipe closed."""
    if kill:
        process.kill()
    else:
        process.terminate()
    process.wait(timeout=30)
    process.stdout.close()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _wait_lines(path: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _lines(path) < count:
        assert time.monotonic() < deadline, f"{path}: fewer than {count} handled tasks"
        await asyncio.sleep(POLL_SECONDS)


async def test_a_worker_killed_mid_batch_loses_nothing_and_acked_nothing(
    amqp_url: str, tmp_path: Path
) -> None:
    names = make_names(result_mode=ResultMode.BATCHED)
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        ids = await submit(broker, names, 30)
    handled = tmp_path / "handled-1"
    base = names.tasks.removesuffix(".tasks")
    # a batch that only a minute's timer would flush: every result waits in it, unconfirmed
    first = _start_batch_worker(amqp_url, base, handled, 60_000)
    try:
        await _wait_lines(handled, 30)  # every handler has returned; the results wait
        assert await depth(amqp_url, names.result_queue) == 0
    finally:
        _end(first)  # kill -9, mid-batch
    # nothing was acked before its result was confirmed: all 30 come back to the queue
    deadline = time.monotonic() + 20
    while await depth(amqp_url, names.queue) != 30:
        assert time.monotonic() < deadline, "the killed worker's tasks were not all redelivered"
        await asyncio.sleep(POLL_SECONDS)
    second = _start_batch_worker(amqp_url, base, tmp_path / "handled-2", 5)
    try:
        messages: list[Any] = []
        deadline = time.monotonic() + 30
        while len(results_of(messages)) < 30:
            assert time.monotonic() < deadline, f"{len(results_of(messages))} of 30 results"
            messages += await drain(amqp_url, names.result_queue, 1)
        assert sorted(r.task_id for r in results_of(messages)) == sorted(ids)
        assert all(m.type == RESULT_BATCH_MESSAGE_TYPE for m in messages)
        assert all(r.worker_id == "batch-worker" for r in results_of(messages))
        deadline = time.monotonic() + 20
        while await depth(amqp_url, names.queue):
            assert time.monotonic() < deadline, "the second worker left tasks in the queue"
            await asyncio.sleep(POLL_SECONDS)
    finally:
        _end(second, kill=False)
    assert await depth(amqp_url, names.result_queue) == 0  # no duplicate after the 30
