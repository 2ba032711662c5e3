"""The in-memory transport's own semantics, each the way RabbitMQ behaves.

These run without a broker. The behaviour tests that depend on these semantics run on both
transports (`any_url`), so a difference from RabbitMQ shows up there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest

from spectask.errors import PublishError, UnroutableError
from spectask.runtime import memory
from spectask.runtime.memory import FakeClock, topic_matches
from spectask.runtime.publisher import OutgoingMessage, Publisher
from spectask.runtime.transport import (
    Channel,
    Connection,
    IncomingMessage,
    NotFoundError,
    PreconditionFailedError,
    connect,
)

pytestmark = [pytest.mark.memory, pytest.mark.timeout(30)]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*", "", False),
        ("#", "", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.a", "a", True),
        ("#.a", "x.y.a", True),
        ("#.a", "x.a.y", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("*.#", "", False),
        ("*.#", "a", True),
        ("#.*", "a.b", True),
        ("a.*.#", "a", False),
        ("image_processing.#", "image_processing.resize", True),
        ("image_processing.#", "data_analysis.statistics", False),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_topic_matching_follows_rabbitmq(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


@pytest.fixture
async def connection() -> AsyncIterator[Connection]:
    hub = memory.new_hub(prefix="unit")
    connected = await connect(hub.url)
    try:
        yield connected
    finally:
        await connected.close()
        memory.forget(hub.url)


@pytest.fixture
async def fake_clock_connection() -> AsyncIterator[tuple[Connection, FakeClock]]:
    clock = FakeClock()
    hub = memory.new_hub(prefix="unit", clock=clock)
    connected = await connect(hub.url)
    try:
        yield connected, clock
    finally:
        await connected.close()
        memory.forget(hub.url)


class Inbox:
    """Collects deliveries; `wait(n)` returns once n arrived (never a fixed sleep)."""

    def __init__(self, *, ack: bool = False) -> None:
        self.messages: list[IncomingMessage] = []
        self._ack = ack
        self._changed = asyncio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        self.messages.append(message)
        if self._ack:
            await message.ack()
        self._changed.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[IncomingMessage]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


async def topic_setup(channel: Channel, *keys: str) -> list[str]:
    await channel.declare_exchange("ex", "topic", durable=True)
    names = []
    for number, key in enumerate(keys):
        queue = await channel.declare_queue(f"q{number}", durable=True)
        await queue.bind("ex", routing_key=key)
        names.append(queue.name)
    return names


def message(body: bytes = b"{}", **properties: object) -> aio_pika.Message:
    return aio_pika.Message(body, **properties)  # type: ignore[arg-type]


async def test_a_topic_exchange_copies_to_every_matching_queue(connection: Connection) -> None:
    channel = await connection.channel()
    await topic_setup(channel, "a.#", "*.b", "c.*")
    exchange = await channel.get_exchange("ex", ensure=True)
    await exchange.publish(message(b"1"), "a.b")
    counts = [
        (await channel.declare_queue(name, passive=True)).declaration_result.message_count
        for name in ("q0", "q1", "q2")
    ]
    assert counts == [1, 1, 0]


async def test_mandatory_unroutable_is_the_same_unroutable_error(connection: Connection) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await topic_setup(channel, "a.#")
    publisher = Publisher(channel)
    with pytest.raises(UnroutableError, match=r"'b\.c' matched no queue"):
        await publisher.publish(OutgoingMessage("ex", "b.c", b"{}", "m1", "t"))
    await publisher.publish(OutgoingMessage("ex", "a.c", b"{}", "m2", "t"))  # channel still open


async def test_a_missing_exchange_closes_the_channel_and_is_a_publish_error(
    connection: Connection,
) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    with pytest.raises(PublishError, match="connection lost before the broker confirmed"):
        await Publisher(channel).publish(OutgoingMessage("nowhere", "k", b"{}", "m1", "t"))
    assert channel.is_closed
    other = await connection.channel()
    with pytest.raises(NotFoundError):
        await other.declare_exchange("nowhere", "topic", passive=True)
    assert other.is_closed  # a 404 closes the channel, as on RabbitMQ


async def test_a_redeclare_with_other_arguments_is_refused(connection: Connection) -> None:
    channel = await connection.channel()
    await channel.declare_queue("q", durable=True, arguments={"x-max-priority": 5})
    await channel.declare_queue("q", durable=True, arguments={"x-max-priority": 5})
    with pytest.raises(PreconditionFailedError):
        await channel.declare_queue("q", durable=True, arguments={"x-max-priority": 9})


async def test_nack_requeue_returns_the_message_to_its_place_redelivered(
    connection: Connection,
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue("q", durable=True)
    for body in (b"1", b"2", b"3"):
        await channel.default_exchange.publish(message(body), "q")
    first = await queue.get(no_ack=False, fail=False)
    assert first is not None and first.body == b"1" and not first.redelivered
    await first.nack(requeue=True)
    again = [await queue.get(no_ack=True, fail=False) for _ in range(3)]
    assert [(m.body, m.redelivered) for m in again if m] == [
        (b"1", True),
        (b"2", False),
        (b"3", False),
    ]
    assert await queue.get(no_ack=True, fail=False) is None


async def test_a_closed_channel_gives_its_unacked_deliveries_to_another_consumer(
    connection: Connection,
) -> None:
    setup = await connection.channel()
    await setup.declare_queue("work", durable=True)
    for body in (b"1", b"2"):
        await setup.default_exchange.publish(message(body), "work")
    gone = await connection.channel()
    await gone.set_qos(prefetch_count=10)
    held = Inbox()  # never acks
    await (await gone.get_queue("work")).consume(held)
    await held.wait(2)
    other = await connection.channel()
    await other.set_qos(prefetch_count=10)
    taken = Inbox(ack=True)
    await (await other.get_queue("work")).consume(taken)
    await gone.close()
    got = await taken.wait(2)
    assert [(m.body, m.redelivered) for m in got] == [(b"1", True), (b"2", True)]


async def test_prefetch_bounds_the_unacked_deliveries_per_consumer(connection: Connection) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=2)
    queue = await channel.declare_queue("q", durable=True)
    for number in range(5):
        await channel.default_exchange.publish(message(str(number).encode()), "q")
    inbox = Inbox()
    await queue.consume(inbox)
    await inbox.wait(2)
    assert (await channel.declare_queue("q", passive=True)).declaration_result.message_count == 3
    await inbox.messages[0].ack()
    await inbox.wait(3)
    assert [m.body for m in inbox.messages] == [b"0", b"1", b"2"]


async def test_higher_priority_first_and_fifo_within_a_priority(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue("q", durable=True, arguments={"x-max-priority": 5})
    for body, priority in [(b"a", 1), (b"b", 9), (b"c", 1), (b"d", 5), (b"e", None)]:
        await channel.default_exchange.publish(message(body, priority=priority), "q")
    order = []
    while (got := await queue.get(no_ack=True, fail=False)) is not None:
        order.append(got.body)
    assert order == [b"b", b"d", b"a", b"c", b"e"]  # 9 is capped at 5, equal to d: FIFO


async def test_a_queue_without_max_priority_ignores_priorities(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue("q", durable=True)
    for body, priority in [(b"a", 1), (b"b", 9)]:
        await channel.default_exchange.publish(message(body, priority=priority), "q")
    first = await queue.get(no_ack=True, fail=False)
    assert first is not None and first.body == b"a"


async def test_ttl_dead_letters_back_with_the_original_key_when_the_clock_says_so(
    fake_clock_connection: tuple[Connection, FakeClock],
) -> None:
    connection, clock = fake_clock_connection
    channel = await connection.channel()
    await channel.declare_exchange("tasks", "topic", durable=True)
    await channel.declare_exchange("retry.500ms", "fanout", durable=True)
    tier = await channel.declare_queue(
        "retry.500ms",
        durable=True,
        arguments={"x-message-ttl": 500, "x-dead-letter-exchange": "tasks"},
    )
    await tier.bind("retry.500ms", routing_key="")
    work = await channel.declare_queue("work", durable=True)
    await work.bind("tasks", routing_key="job.#")
    exchange = await channel.get_exchange("retry.500ms", ensure=False)
    await exchange.publish(message(b"t", headers={"x-spectask-attempt": 2}), "job.run")
    clock.advance(0.499)
    assert await work.get(no_ack=True, fail=False) is None
    assert (
        await channel.declare_queue("retry.500ms", passive=True)
    ).declaration_result.message_count == 1
    assert clock.advance(0.001) == 1
    back = await work.get(no_ack=True, fail=False)
    assert back is not None and back.body == b"t" and back.routing_key == "job.run"
    assert back.headers["x-spectask-attempt"] == 2
    [death] = back.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("expired", "retry.500ms", 1)
    assert death["routing-keys"] == ["job.run"]


async def test_reject_without_requeue_dead_letters_with_reason_rejected(
    connection: Connection,
) -> None:
    channel = await connection.channel()
    await channel.declare_exchange("dlx", "fanout", durable=True)
    dead = await channel.declare_queue("dead", durable=True)
    await dead.bind("dlx", routing_key="")
    queue = await channel.declare_queue(
        "q", durable=True, arguments={"x-dead-letter-exchange": "dlx"}
    )
    await channel.default_exchange.publish(message(b"x"), "q")
    got = await queue.get(no_ack=False, fail=False)
    assert got is not None
    await got.reject(requeue=False)
    moved = await dead.get(no_ack=True, fail=False)
    assert moved is not None and moved.headers["x-death"][0]["reason"] == "rejected"


async def test_a_per_message_expiration_expires_it_without_a_dead_letter_exchange(
    fake_clock_connection: tuple[Connection, FakeClock],
) -> None:
    connection, clock = fake_clock_connection
    channel = await connection.channel()
    queue = await channel.declare_queue("requests", durable=True)
    await channel.default_exchange.publish(message(b"late", expiration=2), "requests")
    await channel.default_exchange.publish(message(b"kept"), "requests")
    clock.advance(2)
    left = await queue.get(no_ack=True, fail=False)
    assert left is not None and left.body == b"kept"
    assert await queue.get(no_ack=True, fail=False) is None


async def test_stream_offsets_read_the_log_without_removing_it(connection: Connection) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    stream = await channel.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    for body in (b"0", b"1", b"2"):
        await channel.default_exchange.publish(message(body), "s")
    since = datetime.now(UTC)
    readers = {offset: Inbox(ack=True) for offset in ("first", "next", "last", 1)}
    for offset, inbox in readers.items():
        await stream.consume(inbox, arguments={"x-stream-offset": offset})
    later = Inbox(ack=True)
    await stream.consume(later, arguments={"x-stream-offset": since})
    await channel.default_exchange.publish(message(b"3"), "s")
    expected: dict[str | int, list[bytes]] = {
        "first": [b"0", b"1", b"2", b"3"],
        "next": [b"3"],
        "last": [b"2", b"3"],
        1: [b"1", b"2", b"3"],
    }
    for offset, bodies in expected.items():
        got = await readers[offset].wait(len(bodies))
        assert [m.body for m in got] == bodies, offset
    assert [m.body for m in await later.wait(1)] == [b"3"]
    assert [m.headers["x-stream-offset"] for m in readers["first"].messages] == [0, 1, 2, 3]
    assert (await channel.declare_queue("s", passive=True)).declaration_result.message_count == 4


async def test_a_stream_consumer_needs_a_prefetch(connection: Connection) -> None:
    channel = await connection.channel()
    stream = await channel.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    with pytest.raises(PreconditionFailedError, match="prefetch"):
        await stream.consume(Inbox(), arguments={"x-stream-offset": "first"})


async def test_direct_reply_to_reaches_only_the_requesting_channel(connection: Connection) -> None:
    server_channel = await connection.channel()
    requests = await server_channel.declare_queue("rpc", durable=True)
    caller = await connection.channel(publisher_confirms=False)
    replies = Inbox()
    await (await caller.get_queue("amq.rabbitmq.reply-to", ensure=False)).consume(
        replies, no_ack=True
    )
    await caller.default_exchange.publish(
        message(b"ping", reply_to="amq.rabbitmq.reply-to", correlation_id="c1"), "rpc"
    )
    request = await requests.get(no_ack=False, fail=False)
    assert request is not None and request.reply_to
    assert request.reply_to.startswith("amq.rabbitmq.reply-to.")
    await server_channel.default_exchange.publish(
        message(b"pong", correlation_id=request.correlation_id), request.reply_to, mandatory=False
    )
    [reply] = await replies.wait(1)
    assert (reply.body, reply.correlation_id) == (b"pong", "c1")
    await caller.close()  # the caller is gone: a late reply is dropped, not queued anywhere
    await server_channel.default_exchange.publish(message(b"late"), request.reply_to)
    assert len(replies.messages) == 1


async def test_a_request_needs_a_reply_consumer_first(connection: Connection) -> None:
    channel = await connection.channel()
    await channel.declare_queue("rpc", durable=True)
    with pytest.raises(PreconditionFailedError, match="reply consumer"):
        await channel.default_exchange.publish(message(reply_to="amq.rabbitmq.reply-to"), "rpc")


async def test_headers_come_back_as_a_real_delivery_has_them(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue("q", durable=True)
    headers = {"raw": bytearray(b"\xff"), "n": 3, "nested": {"a": [1, "x"]}}
    await channel.default_exchange.publish(message(headers=headers), "q")
    got = await queue.get(no_ack=True, fail=False)
    assert got is not None and dict(got.headers) == headers
    with pytest.raises(TypeError):  # bytes cannot travel in AMQP headers, as with aio-pika
        await channel.default_exchange.publish(message(headers={"b": b"x"}), "q")
