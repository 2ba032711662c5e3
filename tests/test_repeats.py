"""Issue 9 item 11: a redelivered side-effecting task is not run again once the store has its
outcome (`sideEffects` policy, spectask.runtime.repeats), and it waits while nobody can say.

The first test runs on both transports (the in-memory one models redelivery too). A
redelivery is made the way RabbitMQ makes one: the task is taken and given back unacked
(`nack(requeue=True)` sets `redelivered`, as a closed channel or a restarted broker does). The
e-mail goes to a real SMTP server (the mailsink), through the application's real handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import aio_pika
import pytest

from generated import models
from generated.topology import TOPOLOGY
from generated.worker import RECEIVE_ROUTES
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.topology import ReceiveRoute
from tests.status_support import app_worker, collector, producer_client, wait_states
from workloads.app import build_worker
from workloads.mailsink import MailSink, free_port
from workloads.settings import TaskSettings

pytestmark = pytest.mark.timeout(120)
EMAIL = "report_generation.email"
REPORTS = [route for route in RECEIVE_ROUTES if route.task_type == "report_generation"]


def without_policy(routes: Sequence[ReceiveRoute]) -> list[ReceiveRoute]:
    """The same routes with no side effects declared: what a repeat costs without the policy."""
    return [
        dataclasses.replace(r, policy=dataclasses.replace(r.policy, side_effects=frozenset()))
        for r in routes
    ]


@pytest.fixture
def sink() -> Iterator[MailSink]:
    mail = MailSink(free_port())
    mail.start()
    yield mail
    mail.stop()


async def run_burst(
    broker: Broker, routes: Sequence[ReceiveRoute], settings: TaskSettings
) -> WorkerStats:
    """A real worker over the report queue until it is empty."""
    return await app_worker(broker, routes, build_worker(settings).handlers, worker_id="w-rep")


async def redeliver(broker: Broker, message: aio_pika.abc.AbstractMessage) -> None:
    """Put a copy of the task in its queue and give it back unacked: now it is redelivered."""
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange("tasks", ensure=False)
    await exchange.publish(message, EMAIL)
    queue = await channel.get_queue("tasks.report_generation", ensure=False)
    taken = None
    for _ in range(100):
        taken = await queue.get(no_ack=False, fail=False)
        if taken is not None:
            break
        await asyncio.sleep(0.05)
    assert taken is not None, "the copy never reached the queue"
    assert not taken.redelivered
    await taken.nack(requeue=True)
    await channel.close()


def email_task(task_id: str) -> aio_pika.Message:
    body = models.ReportEmail(title="t", series=[1.0, 2.0], to=["ops@example.test"])
    return aio_pika.Message(
        body.model_dump_json(exclude_unset=True).encode(),
        message_id=task_id,
        type=EMAIL,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={"x-spectask-attempt": 1},
    )


@pytest.mark.parametrize("policy", ["sideEffects", "none"])
async def test_a_redelivered_email_is_not_sent_again_once_stored(
    any_url: str, tmp_path: Path, sink: MailSink, policy: str
) -> None:
    settings = TaskSettings(
        output_dir=tmp_path / "out",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        mail_allowed_domains="example.test",
    )
    routes = REPORTS if policy == "sideEffects" else without_policy(REPORTS)
    async with collector(any_url, f"sqlite:///{tmp_path / 'tasks.db'}"):
        broker = await Broker.connect(RuntimeConfig(amqp_url=any_url), name="test-repeats")
        async with broker:
            client = await producer_client(broker)
            channel = await broker.connection.channel()
            await (await channel.get_queue("tasks.report_generation", ensure=False)).purge()
            task_id = f"repeat-{policy}-{free_port()}"
            message = email_task(task_id)
            await (await channel.get_exchange("tasks", ensure=False)).publish(message, EMAIL)
            first = await run_burst(broker, routes, settings)
            assert first.succeeded == 1
            await wait_states(client, {task_id: "SUCCEEDED"})
            await redeliver(broker, email_task(task_id))
            second = await run_burst(broker, routes, settings)
    sent = [m for m in sink.messages if m["message_id"] == f"<{task_id}@localhost>"]
    if policy == "sideEffects":
        assert second.skipped_repeats == 1 and second.processed == 0
        assert len(sent) == 1, "the redelivered e-mail was sent again"
    else:  # the test can fail: without the policy the repeat is a second e-mail
        assert second.processed == 1 and second.skipped_repeats == 0
        assert len(sent) == 2


async def test_a_redelivered_email_waits_while_no_collector_can_say(
    amqp_url: str, tmp_path: Path, sink: MailSink
) -> None:
    """Nobody answers the status RPC: the e-mail is not sent blind, it goes back to its queue;
    once a collector answers (the store has no outcome for it) it runs, once."""
    settings = TaskSettings(
        output_dir=tmp_path / "out",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        mail_allowed_domains="example.test",
    )
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-repeats")
    async with broker:
        await broker.declare(TOPOLOGY)
        channel = await broker.connection.channel()
        await (await channel.get_queue("tasks.report_generation", ensure=False)).purge()
        await (await channel.get_queue("spectask.status", ensure=False)).purge()
        task_id = f"repeat-wait-{free_port()}"
        await redeliver(broker, email_task(task_id))
        stop = asyncio.Event()
        handlers = build_worker(settings).handlers
        worker = asyncio.create_task(
            app_worker(broker, REPORTS, handlers, worker_id="w-wait", stop=stop)
        )
        try:
            requeued = asyncio.create_task(wait_for_log("spectask", "cannot be asked"))
            await asyncio.wait_for(requeued, timeout=30)
            assert sink.messages == [], "the e-mail ran although its store could not be asked"
            async with collector(amqp_url, f"sqlite:///{tmp_path / 'tasks.db'}") as (store, _):
                for _ in range(400):
                    record = await store.get(task_id)
                    if record is not None and record.is_final:
                        break
                    await asyncio.sleep(0.05)
                assert record is not None and record.state.value == "SUCCEEDED"
        finally:
            stop.set()
            stats = await worker
    assert stats.requeued >= 1 and stats.succeeded == 1
    assert [m["message_id"] for m in sink.messages] == [f"<{task_id}@localhost>"]


async def wait_for_log(logger: str, text: str) -> None:
    """Return once `logger` emits a record containing `text` (the event, not a sleep)."""
    seen = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                loop.call_soon_threadsafe(seen.set)

    watch = Watch()
    logging.getLogger(logger).addHandler(watch)
    try:
        await seen.wait()
    finally:
        logging.getLogger(logger).removeHandler(watch)
