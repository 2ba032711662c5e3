"""The dead-letter queue as something to inspect and act on: list, show, replay, purge.

Every operation reads the queue the same way (`_Reading`): `basic.get` with manual acks, at most
as many messages as the queue held when the operation started, every delivery kept unacked
until the operation is done. Only what the operation means to remove (a confirmed replay, a
purge) is acked; everything else goes back with one bulk `nack(requeue=True)`. Why this way:

- Nothing is lost: if we crash or the connection drops, the broker requeues the unacked
  deliveries itself. A replay is acked only after the broker confirmed the republished task,
  so a crash in between gives a duplicate (harmless: same task id), never a loss.
- A listing terminates even while new dead letters keep arriving: they queue behind the count
  we started with, and we stop at that count.
- Order is kept: RabbitMQ puts a requeued message back at its original position when it can
  (a classic queue with no other consumer, which is what `dead_letter` is). Requeueing does mark
  the messages `redelivered`, and on a quorum queue it may count as a delivery attempt.
- While one operation holds the dead letters, another one (a second `spectask dlq` at the same
  moment) sees a shorter queue; they reappear when the first one finishes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiormq

from spectask.errors import SpectaskError
from spectask.protocol import names
from spectask.protocol.names import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER as ATTEMPTS,
    ERROR_HEADER as ERROR,
    FIRST_FAILURE_HEADER as FIRST_FAILURE_AT,
    LAST_FAILURE_HEADER as LAST_FAILURE_AT,
    ORIGIN_EXCHANGE_HEADER as ORIGIN_EXCHANGE,
    ORIGIN_QUEUE_HEADER as ORIGIN_QUEUE,
    ORIGIN_ROUTING_KEY_HEADER as ORIGIN_ROUTING_KEY,
    REASON_HEADER as REASON,
    TRACEBACK_HEADER as TRACEBACK,
)
from spectask.runtime.broker import Broker
from spectask.runtime.deaths import with_reason
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.transport import NOT_FOUND, IncomingMessage, Queue

# The protocol's DeadLetterHeaders: removed on replay, so the replayed task looks fresh.
DEAD_LETTER_HEADERS = frozenset(names.DEAD_LETTER_HEADERS)
# Failure history a replay starts over from: the retry tiers' last error, and the broker's own
# dead-lettering record (a task that waited in a retry tier carries x-death).
HISTORY_HEADERS = frozenset(
    {
        names.LAST_ERROR_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
GET_TIMEOUT_SECONDS = 10.0


class DeadLetterQueueMissingError(SpectaskError):
    """The dead-letter queue to read does not exist on the broker."""


class NoMatchingDeadLettersError(SpectaskError):
    """A replay or show named dead letters that are not in the queue."""


def plain(value: Any) -> Any:
    """A header value as JSON-safe data (AMQP tables hold bytes, datetimes, decimals)."""
    if isinstance(value, bytes | bytearray):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _text(value: Any) -> str:
    value = plain(value)
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    """An ISO 8601 header as an aware datetime; None if absent or malformed (listing goes on)."""
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadLetterView:
    """One dead letter, decoded from its headers; `headers` and `body` are exactly as stored.

    `position` is its place in the queue when it was read (0 = next to be delivered).
    """

    position: int
    task_id: str
    message_type: str
    reason: str
    error: str
    traceback: str
    attempts: int | None
    origin_queue: str
    origin_exchange: str | None
    origin_routing_key: str
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    body: bytes
    content_type: str | None
    priority: int | None
    headers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: IncomingMessage, position: int) -> DeadLetterView:
        stored = dict(message.headers or {})
        headers = with_reason(stored)  # a broker's own dead letter (delivery_limit) too
        return cls(
            position=position,
            task_id=message.message_id or "",
            message_type=message.type or "",
            reason=_text(headers.get(REASON)) or "unknown",
            error=_text(headers.get(ERROR)),
            traceback=_text(headers.get(TRACEBACK)),
            attempts=_int(headers.get(ATTEMPTS)),
            origin_queue=_text(headers.get(ORIGIN_QUEUE)),
            # "" is the default exchange, a valid origin; a missing header is not replayable.
            origin_exchange=_text(headers[ORIGIN_EXCHANGE]) if ORIGIN_EXCHANGE in headers else None,
            origin_routing_key=_text(headers.get(ORIGIN_ROUTING_KEY)),
            first_failure_at=_time(headers.get(FIRST_FAILURE_AT)),
            last_failure_at=_time(headers.get(LAST_FAILURE_AT)),
            body=bytes(message.body),
            content_type=message.content_type,
            priority=message.priority,
            headers=stored,
        )

    @property
    def error_line(self) -> str:
        """The error's first line (the full text is in `error`)."""
        lines = self.error.strip().splitlines()
        return lines[0] if lines else ""

    def age(self, now: datetime | None = None) -> timedelta | None:
        """Time since it was dead-lettered (its last failure)."""
        when = self.last_failure_at or self.first_failure_at
        if when is None:
            return None
        return (now or datetime.now(UTC)) - when

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """The decoded fields as JSON-safe data (no body, no traceback: see `show`)."""
        age = self.age(now)
        return {
            "position": self.position,
            "task_id": self.task_id,
            "message_type": self.message_type,
            "reason": self.reason,
            "error": self.error_line,
            "attempts": self.attempts,
            "origin_queue": self.origin_queue,
            "origin_exchange": self.origin_exchange,
            "origin_routing_key": self.origin_routing_key,
            "first_failure_at": _iso(self.first_failure_at),
            "last_failure_at": _iso(self.last_failure_at),
            "age_seconds": None if age is None else round(age.total_seconds(), 3),
            "body_bytes": len(self.body),
        }

    def replay_message(self) -> OutgoingMessage:
        """The task as it goes back to its origin: same id, type, body; attempt 1 again."""
        if self.origin_exchange is None:
            raise SpectaskError(
                f"dead letter {self.task_id or '(no task id)'} has no {ORIGIN_EXCHANGE} header, "
                "so there is nowhere to replay it to"
            )
        headers = {
            # aio-pika decodes a non-UTF-8 header string as bytes, which it will not encode
            # again; as a bytearray it goes out byte for byte.
            key: bytearray(value) if isinstance(value, bytes) else value
            for key, value in self.headers.items()
            if key not in DEAD_LETTER_HEADERS and key not in HISTORY_HEADERS
        }
        headers[ATTEMPT_HEADER] = 1
        return OutgoingMessage(
            exchange=self.origin_exchange,
            routing_key=self.origin_routing_key,
            body=self.body,
            message_id=self.task_id,
            message_type=self.message_type,
            priority=self.priority,
            headers=headers,
            content_type=self.content_type or "application/json",
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _matches(view: DeadLetterView, task_ids: Collection[str], reason: str | None) -> bool:
    return (not task_ids or view.task_id in task_ids) and (reason is None or view.reason == reason)


class _Reading:
    """Deliveries taken from the queue and held unacked until `remove`d or requeued."""

    def __init__(self, queue: Queue, count: int) -> None:
        self.count = count
        self._queue = queue
        self._held: dict[int, IncomingMessage] = {}

    async def deliveries(self) -> AsyncIterator[tuple[DeadLetterView, IncomingMessage]]:
        """Up to `count` dead letters, oldest first; fewer if someone else took some."""
        for position in range(self.count):
            message = await self._queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)
            if message is None:
                return
            assert message.delivery_tag is not None
            self._held[message.delivery_tag] = message
            yield DeadLetterView.from_message(message, position), message

    async def remove(self, message: IncomingMessage) -> None:
        """Ack (delete) one held dead letter."""
        await message.ack()
        assert message.delivery_tag is not None
        del self._held[message.delivery_tag]

    async def requeue_rest(self) -> None:
        """One bulk nack(requeue) of everything still held: they return to their places."""
        if not self._held:
            return
        last = self._held[max(self._held)]
        self._held.clear()
        # If the channel is gone, the broker has already requeued every unacked delivery.
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await last.nack(multiple=True, requeue=True)


@contextlib.asynccontextmanager
async def _reading(broker: Broker, queue: str) -> AsyncIterator[_Reading]:
    channel = await broker.connection.channel()
    try:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except NOT_FOUND:
            raise DeadLetterQueueMissingError(
                f"dead-letter queue {queue!r} does not exist; start a worker (it declares the "
                "topology) or pass --queue with the right name"
            ) from None
        reading = _Reading(declared, int(declared.declaration_result.message_count or 0))
        try:
            yield reading
        finally:
            await reading.requeue_rest()
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await channel.close()


async def list_dead_letters(
    broker: Broker,
    queue: str,
    *,
    reason: str | None = None,
    task_ids: Collection[str] = (),
    limit: int | None = None,
) -> list[DeadLetterView]:
    """The dead letters in queue order, filtered; the queue keeps them, in order (redelivered)."""
    found: list[DeadLetterView] = []
    async with _reading(broker, queue) as reading:
        async for view, _ in reading.deliveries():
            if _matches(view, task_ids, reason):
                found.append(view)
                if limit is not None and len(found) >= limit:
                    break
    return found


@dataclass
class ReplayReport:
    """What a replay did: `replayed` are gone from the queue, `failed` are still in it."""

    replayed: list[DeadLetterView] = field(default_factory=list)
    failed: list[tuple[DeadLetterView, str]] = field(default_factory=list)


async def replay(
    broker: Broker,
    queue: str,
    *,
    task_ids: Collection[str] = (),
    reason: str | None = None,
    replay_all: bool = False,
) -> ReplayReport:
    """Publish the selected dead letters back to their origin, each confirmed before its ack.

    Select by task ids and/or reason, or everything with `replay_all`. Unknown task ids refuse
    the whole replay before anything is published (a typo should not half-replay). A publish
    that is unroutable or not confirmed leaves its dead letter in place and lands in `failed`.
    """
    wanted = set(task_ids)
    if not wanted and reason is None and not replay_all:
        raise SpectaskError("say which dead letters to replay: task ids, --reason, or --all")
    publisher = await broker.publisher()
    report = ReplayReport()
    async with _reading(broker, queue) as reading:
        selected = [
            (view, message)
            async for view, message in reading.deliveries()
            if _matches(view, wanted, reason)
        ]
        _refuse_unmatched(queue, [view for view, _ in selected], wanted, reason)
        missing_exchanges: dict[str, bool] = {}
        for view, message in selected:
            try:
                outgoing = view.replay_message()
                if outgoing.exchange not in missing_exchanges:
                    missing_exchanges[outgoing.exchange] = not await _exchange_exists(
                        broker, outgoing.exchange
                    )
                if missing_exchanges[outgoing.exchange]:
                    raise SpectaskError(f"origin exchange {outgoing.exchange!r} does not exist")
                await publisher.publish(outgoing)
            except SpectaskError as exc:
                report.failed.append((view, str(exc)))
                continue
            try:
                await reading.remove(message)
            except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                note = "it stays listed; replaying it again is harmless (same task id)"
                report.failed.append((view, f"replayed, but not removed ({exc}); {note}"))
                continue
            report.replayed.append(view)
    return report


def _refuse_unmatched(
    queue: str, selected: list[DeadLetterView], wanted: set[str], reason: str | None
) -> None:
    missing = sorted(wanted - {view.task_id for view in selected})
    if missing:
        raise NoMatchingDeadLettersError(
            f"no dead letter in {queue!r} with task id {', '.join(missing)}"
            + (f" and reason {reason!r}" if reason else "")
            + "; nothing was replayed (see `spectask dlq list`)"
        )
    if not selected:
        what = f"with reason {reason!r}" if reason else "at all"
        raise NoMatchingDeadLettersError(f"no dead letters {what} in {queue!r}; nothing replayed")


async def _exchange_exists(broker: Broker, name: str) -> bool:
    """Checked apart from the publish: publishing to a missing exchange closes the channel."""
    if name == "":
        return True
    channel = await broker.connection.channel()
    try:
        await channel.declare_exchange(name, passive=True)
    except NOT_FOUND:
        return False
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await channel.close()
    return True


async def purge(
    broker: Broker,
    queue: str,
    *,
    reason: str | None = None,
    confirm: Callable[[int], Awaitable[bool]] | None = None,
) -> int:
    """Delete the dead letters (of one reason, if given); return how many were deleted.

    `confirm(n)` is awaited while the n matching dead letters are held, so exactly those are
    deleted if it says yes, and none if it says no; dead letters arriving meanwhile are left
    alone. It is async because a blocking prompt would stall the connection's heartbeats.
    """
    async with _reading(broker, queue) as reading:
        selected = [
            message async for view, message in reading.deliveries() if _matches(view, (), reason)
        ]
        if not selected or (confirm is not None and not await confirm(len(selected))):
            return 0
        for deleted, message in enumerate(selected):
            try:
                await reading.remove(message)
            except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                # e.g. the broker's consumer_timeout closed the channel during a long prompt:
                # it has requeued what we held, so nothing beyond `deleted` is gone.
                raise SpectaskError(
                    f"deleted {deleted} of {len(selected)} dead letters, then lost the channel "
                    f"({exc or type(exc).__name__}); the rest are back in {queue!r}"
                ) from exc
    return len(selected)


def body_preview(body: bytes, limit: int = 512) -> str:
    """The body as pretty JSON if it is JSON, else an escaped preview and hex, with its size."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        shown = body[:limit]
        more = f" (first {limit} shown)" if len(body) > limit else ""
        hexed = shown[:64].hex(" ")
        return (
            f"{len(body)} bytes, not JSON{more}:\n{shown!r}\n"
            f"hex: {hexed}{' ...' if len(body) > 64 else ''}"
        )
    return f"{len(body)} bytes, JSON:\n{json.dumps(document, indent=2, ensure_ascii=False)}"


def plain_headers(view: DeadLetterView) -> dict[str, Any]:
    """Every header as JSON-safe data, sorted by name."""
    return {key: plain(view.headers[key]) for key in sorted(view.headers)}
