"""The poison storm: malformed tasks as any AMQP client could send them, mixed into valid work.

Published with pika (a plain AMQP client), because aio-pika's aiormq gives every publish a
random message_id when it has none, and a task without an id is one of the poisons. Each
poison but the id-less ones carries a `poison-NNNNN` id, so its dead letter can be matched;
every one must end in `dead_letter` with a reason, and its handler must never run.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pika

from spectask.protocol import names
from spectask.runtime.task import JSON
from tests.workqueue_support import ROUTES

ROUTE = ROUTES["data_analysis.statistics"]
ID_PREFIX = "poison-"
VALID_BODY = b'{"values": [1, 2, 3]}'


@dataclass(frozen=True)
class Poison:
    kind: str
    body: bytes
    task_id: str | None  # None: published without a message_id
    message_type: str | None = ROUTE.message_type
    content_type: str | None = JSON
    headers: dict[str, Any] = field(default_factory=dict)


def _nested(depth: int) -> bytes:
    return b'{"values": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


def _kinds(rng: random.Random, max_bytes: int) -> list[tuple[str, dict[str, Any]]]:
    """(kind, Poison fields) of one round: every family of poison once."""
    # pika cannot send a float header; an AMQP decimal is as much "not an integer" (aio-pika's
    # float is in tests/test_poison.py)
    bad_attempts: list[Any] = [2**31, 2**62, 1_000_001, 0, -1, "1", "abc", Decimal("1.5"), "", True]
    huge = json.dumps({"values": [1.5] * (max_bytes // 4)}).encode()
    kinds: list[tuple[str, dict[str, Any]]] = [
        (f"attempt={value!r}", {"headers": {names.ATTEMPT_HEADER: value}}) for value in bad_attempts
    ]
    kinds += [
        ("submitted-at=5", {"headers": {names.SUBMITTED_AT_HEADER: 5}}),
        ("random bytes", {"body": rng.randbytes(rng.randrange(1, 2048))}),
        ("values is a string", {"body": b'{"values": "abc"}'}),
        ("values are bools", {"body": b'{"values": [true, false]}'}),
        ("values are strings", {"body": b'{"values": ["1", "2"]}'}),
        ("a list body", {"body": b"[1, 2, 3]"}),
        ("a null body", {"body": b"null"}),
        ("an empty object", {"body": b"{}"}),
        ("an extra field", {"body": b'{"values": [1], "extra": 1}'}),
        ("not UTF-8", {"body": b'{"values": [1], "note": "\xff\xfe"}'}),
        ("nested 100k deep", {"body": _nested(100_000)}),
        ("nested 300 deep", {"body": _nested(300)}),
        ("over the size limit", {"body": huge}),
        ("no message_id", {"task_id": None}),
        ("unknown type", {"message_type": "data_analysis.nope"}),
        ("no type", {"message_type": None}),
        ("no content type", {"content_type": None}),
        ("text/plain", {"content_type": "text/plain"}),
    ]
    return kinds


def storm(count: int, max_bytes: int, seed: int = 9) -> list[Poison]:
    """`count` poison messages, cycling through every family (the huge ones only a few)."""
    rng = random.Random(seed)
    made: list[Poison] = []
    huge_left = 5
    while len(made) < count:
        for kind, fields in _kinds(rng, max_bytes):
            if len(made) >= count:
                break
            if kind == "over the size limit":
                if not huge_left:
                    continue
                huge_left -= 1
            values: dict[str, Any] = {"body": VALID_BODY, "task_id": f"{ID_PREFIX}{len(made):05d}"}
            values.update(fields)
            made.append(Poison(kind=kind, **values))
    return made


def publish(url: str, poison: list[Poison], *, pace: float = 0.0, chunk: int = 50) -> None:
    """Publish with confirms on one channel, `chunk` at a time with `pace` s between chunks."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for index, message in enumerate(poison):
            properties = pika.BasicProperties(
                message_id=message.task_id,
                type=message.message_type,
                content_type=message.content_type,
                headers=message.headers or None,
                delivery_mode=2,
            )
            channel.basic_publish(
                ROUTE.exchange, ROUTE.routing_key, message.body, properties, mandatory=True
            )
            if pace and (index + 1) % chunk == 0:
                time.sleep(pace)
    finally:
        connection.close()


@dataclass(frozen=True)
class DeadLetter:
    task_id: str | None
    reason: str | None
    origin_queue: str | None
    error: str


async def take_dead_letters(
    url: str, queue: str, workers_queue: str, wanted: int, timeout: float = 60.0
) -> list[DeadLetter]:
    """Get (and ack) every dead letter until `wanted` came from `workers_queue` and the queue
    is empty, or the deadline passes; the collector's own (`unstorable`) ones come along."""
    import asyncio

    from spectask.runtime.transport import connect

    taken: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while True:
            message = await source.get(fail=False)
            if message is None:
                from_workers = sum(1 for d in taken if d.origin_queue == workers_queue)
                if from_workers >= wanted or time.monotonic() > deadline:
                    return taken
                await asyncio.sleep(0.1)
                continue
            headers = message.headers or {}
            taken.append(
                DeadLetter(
                    message.message_id,
                    _text(headers.get(names.REASON_HEADER)),
                    _text(headers.get(names.ORIGIN_QUEUE_HEADER)),
                    _text(headers.get(names.ERROR_HEADER)) or "",
                )
            )
            await message.ack()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)
