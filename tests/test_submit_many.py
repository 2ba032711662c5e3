"""Streaming batch submit on a real broker: a bounded window, and exactly which ids failed.

The window is asserted by counting, not timing: the generator records how many of its
messages were still unconfirmed each time the stream pulled the next one. Failures are forced
by the broker itself: a queue with `x-max-length` and `x-overflow=reject-publish` nacks what
does not fit, a routing key nobody binds is returned, and a proxy between client and broker
resets the connection mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from urllib.parse import urlsplit

import aio_pika
import pytest

from spectask.errors import SubmitError, TaskValidationError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.submission import DEFAULT_WINDOW
from spectask.runtime.topology import QueueSpec, Topology
from tests.chaos.proxy import TcpProxy
from tests.runtime_support import Names, Numbers, depth, make_names

pytestmark = pytest.mark.timeout(180)

STREAMED = 20_000
WINDOW = 64


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-submit") as b:
        yield b


async def _queue_ids(url: str, queue: str, delete: bool = True) -> list[str]:
    """Every message id in `queue` (got and acked), then the queue deleted."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue)
        ids: list[str] = []
        while (message := await declared.get(fail=False, no_ack=True)) is not None:
            ids.append(str(message.message_id))
        if delete:
            await channel.queue_delete(queue)
        return ids


async def _declared(broker: Broker, names: Names | None = None) -> tuple[Names, TaskPublisher]:
    """A fresh uniquely named topology (or `names`), declared, and a publisher for it."""
    names = names or make_names()
    await broker.declare(names.topology)
    return names, TaskPublisher(await broker.publisher(), names.topology)


class Source:
    """A lazy batch that records, at every pull, how far the stream ran ahead of the caller."""

    def __init__(self, publisher: TaskPublisher, names: Names, count: int) -> None:
        self.publisher = publisher
        self.names = names
        self.count = count
        self.pulled: list[str] = []
        self.seen: list[str] = []  # ids the caller has been handed
        self.ahead: list[int] = []  # pulled but not yet handed back, at each pull

    def messages(self) -> Iterator[OutgoingMessage]:
        for index in range(self.count):
            message = self.publisher.build(self.names.send, Numbers(values=[index]))
            self.ahead.append(len(self.pulled) - len(self.seen))
            self.pulled.append(message.message_id)
            yield message


async def test_a_generator_larger_than_the_window_streams_with_bounded_pending(
    broker: Broker, amqp_url: str
) -> None:
    names, publisher = await _declared(broker)
    source = Source(publisher, names, STREAMED)
    async for task_id in publisher.submit_stream(source.messages(), window=WINDOW):
        source.seen.append(task_id)
    # each pull found at most WINDOW - 1 unconfirmed before it, so never more than WINDOW
    # pending at once, and the window was really used
    assert max(source.ahead) == WINDOW - 1
    assert len(source.seen) == STREAMED and sorted(source.seen) == sorted(source.pulled)
    assert await depth(amqp_url, names.queue) == STREAMED
    assert sorted(await _queue_ids(amqp_url, names.queue)) == sorted(source.pulled)


async def test_submit_many_takes_a_generator_and_keeps_the_default_window(
    broker: Broker, amqp_url: str
) -> None:
    names, publisher = await _declared(broker)
    source = Source(publisher, names, 3 * DEFAULT_WINDOW)
    ticks: list[int] = []
    ids = await publisher.submit_many(
        source.messages(), on_confirmed=ticks.append, confirmed=source.seen
    )
    assert max(source.ahead) == DEFAULT_WINDOW - 1
    assert sorted(ids) == sorted(source.pulled) and sum(ticks) == len(ids)
    assert sorted(await _queue_ids(amqp_url, names.queue)) == sorted(ids)


def _limited(names: Names, max_length: int) -> Topology:
    """The task queue holds `max_length` messages and nacks the publishes beyond them."""
    [task_queue, *rest] = names.topology.queues
    limited = replace(
        task_queue,
        arguments=(
            *task_queue.arguments,
            ("x-max-length", max_length),
            ("x-overflow", "reject-publish"),
        ),
    )
    assert isinstance(limited, QueueSpec)
    return replace(names.topology, queues=(limited, *rest))


async def test_nacks_mid_stream_name_exactly_the_unconfirmed_ids(
    broker: Broker, amqp_url: str
) -> None:
    names = make_names()
    names, publisher = await _declared(broker, replace(names, topology=_limited(names, 100)))
    source = Source(publisher, names, 1000)
    with pytest.raises(SubmitError, match="not confirmed") as caught:
        await publisher.submit_many(source.messages(), window=16)
    error = caught.value
    stored = await _queue_ids(amqp_url, names.queue)
    assert len(stored) == 100 and sorted(error.confirmed) == sorted(stored)
    assert error.confirmed_count == 100
    assert error.unconfirmed and set(error.unconfirmed).isdisjoint(stored)
    # every pulled message is either confirmed or named unconfirmed; the rest were never sent
    assert sorted(error.confirmed + list(error.unconfirmed)) == sorted(source.pulled)
    assert len(source.pulled) <= 100 + 16
    assert all("refused" in reason for reason in error.unconfirmed.values())


async def test_a_returned_publish_is_the_one_unconfirmed_id(broker: Broker, amqp_url: str) -> None:
    names, publisher = await _declared(broker)
    nowhere = replace(names.send, routing_key="nobody.listens")
    messages = [publisher.build(names.send, Numbers(values=[i])) for i in range(50)]
    returned = publisher.build(nowhere, Numbers(values=[0]))
    sent: list[str] = []
    with pytest.raises(SubmitError, match="matched no queue") as caught:
        async for task_id in publisher.submit_stream([*messages, returned, *messages[:0]]):
            sent.append(task_id)
    assert list(caught.value.unconfirmed) == [returned.message_id]
    assert caught.value.confirmed == [] and caught.value.confirmed_count == 50
    assert sorted(sent) == sorted(m.message_id for m in messages)
    assert sorted(await _queue_ids(amqp_url, names.queue)) == sorted(sent)


async def test_a_connection_lost_mid_stream_reports_what_the_broker_may_not_have(
    amqp_url: str,
) -> None:
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.port or 5672).start()
    try:
        through = proxy.url(parts.username or "guest", parts.password or "guest")
        config = RuntimeConfig(amqp_url=through, connect_timeout=10)
        async with await Broker.connect(config, name="test-submit-cut") as broker:
            names, publisher = await _declared(broker)
            source = Source(publisher, names, 5000)
            cut_at = 700

            def cutting() -> Iterator[OutgoingMessage]:
                for index, message in enumerate(source.messages()):
                    if index == cut_at:
                        assert proxy.cut(hold=30.0) >= 1
                    yield message

            with pytest.raises(SubmitError, match="not confirmed") as caught:
                await publisher.submit_many(cutting(), window=128)
        error = caught.value
        assert error.unconfirmed, "a cut with publishes in flight leaves some unconfirmed"
        assert sorted(error.confirmed + list(error.unconfirmed)) == sorted(source.pulled)
        assert len(source.pulled) <= cut_at + 128 + 1
        stored = await _queue_ids(amqp_url, names.queue)
        assert set(error.confirmed) <= set(stored)  # confirmed means stored
        assert all("connection lost" in reason for reason in error.unconfirmed.values())
    finally:
        proxy.close()


async def test_a_failing_generator_stops_the_batch_with_the_confirmed_ids(
    broker: Broker, amqp_url: str
) -> None:
    names, publisher = await _declared(broker)
    built: list[str] = []

    def messages() -> Iterator[OutgoingMessage]:
        for index in range(30):
            message = publisher.build(names.send, Numbers(values=[index]))
            built.append(message.message_id)
            yield message
        publisher.build(names.send, Numbers(values=[1]), priority=999)  # the caller's mistake
        yield message

    with pytest.raises(SubmitError, match="iterable failed: TaskValidationError") as caught:
        await publisher.submit_many(messages())
    assert isinstance(caught.value.__cause__, TaskValidationError)
    assert sorted(caught.value.confirmed) == sorted(built) and not caught.value.unconfirmed
    assert sorted(await _queue_ids(amqp_url, names.queue)) == sorted(built)


async def test_stopping_early_sends_nothing_more(broker: Broker, amqp_url: str) -> None:
    names, publisher = await _declared(broker)
    source = Source(publisher, names, 10_000)
    stream = publisher.submit_stream(source.messages(), window=8)
    async for task_id in stream:
        source.seen.append(task_id)
        if len(source.seen) == 20:
            break
    await stream.aclose()
    pulled = len(source.pulled)
    assert pulled <= 20 + 8
    assert 20 <= await depth(amqp_url, names.queue) <= pulled
    await _queue_ids(amqp_url, names.queue)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
async def test_a_bad_window_is_one_clear_line(broker: Broker, window: object) -> None:
    names = make_names()
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    with pytest.raises(ValueError, match=r"^window must be a whole number of publishes >= 1"):
        await publisher.submit_many([], window=window)  # type: ignore[arg-type]
