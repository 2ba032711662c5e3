"""Queues: priorities, per-queue and per-message TTL with dead-lettering, consumers, streams.

What is modelled, because spectask's behaviour depends on it:
- order: highest priority first (capped at `x-max-priority`; a queue without it ignores
  priorities), FIFO within a priority; a requeued message returns to its own place;
- consumers take turns (round robin), each holding at most the channel's prefetch unacked;
- `x-message-ttl` and a message's `expiration`: an expired message leaves the queue, and goes
  to `x-dead-letter-exchange` (with `x-dead-letter-routing-key` or its own key) carrying an
  `x-death` record, as the retry tiers need;
- streams (`x-queue-type: stream`): an append-only log; a consumer reads it from its
  `x-stream-offset` (first, last, next, an offset, or a timestamp) without removing anything.
Not modelled: length limits and overflow, quorum delivery limits, single active consumer,
stream retention (`x-max-age`), consumer priorities.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spectask.runtime.memory.clock import Clock, Timer
from spectask.runtime.memory.messages import Envelope
from spectask.runtime.transport import Callback, PreconditionFailedError

if TYPE_CHECKING:
    from spectask.runtime.memory.channel import MemoryChannel

DeadLetter = Callable[["QueueState", Envelope, str], None]


@dataclass(eq=False)
class Consumer:
    """One basic.consume: where its deliveries go and how many it may hold unacked."""

    tag: str
    queue: QueueState
    channel: MemoryChannel
    callback: Callback
    no_ack: bool
    prefetch: int  # 0: no limit
    unacked: int = 0
    position: int = 0  # streams: the next offset to read

    def has_room(self) -> bool:
        return self.no_ack or self.prefetch == 0 or self.unacked < self.prefetch


@dataclass(eq=False)
class QueueState:
    """A queue as the broker holds it (see the module docstring for what it models)."""

    name: str
    clock: Clock
    dead_letter: DeadLetter
    durable: bool = False
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    owner: object | None = None  # the connection of an exclusive queue
    consumers: list[Consumer] = field(default_factory=list)
    _ready: list[tuple[int, int, Envelope]] = field(default_factory=list)
    _log: list[tuple[datetime, Envelope]] = field(default_factory=list)
    _turn: int = 0
    _timer: Timer | None = None
    _timer_at: float | None = None
    had_consumer: bool = False

    @property
    def is_stream(self) -> bool:
        return self.arguments.get("x-queue-type") == "stream"

    @property
    def max_priority(self) -> int | None:
        value = self.arguments.get("x-max-priority")
        return int(value) if value is not None else None

    def message_count(self) -> int:
        return len(self._log) if self.is_stream else len(self._ready)

    # --- putting messages in ------------------------------------------------------------------

    def put(self, envelope: Envelope) -> None:
        """A message routed here: stamp its expiry, queue it, deliver what can be delivered."""
        if self.is_stream:
            self._log.append((datetime.now(UTC), envelope))
            self.dispatch()
            return
        ttls = [
            ms
            for ms in (self.arguments.get("x-message-ttl"), envelope.properties.expiration_ms)
            if ms is not None
        ]
        if ttls:
            envelope = _with(envelope, expires_at=self.clock.now() + min(ttls) / 1000)
        self._push(envelope)
        self.dispatch()

    def requeue(self, envelope: Envelope) -> None:
        """An unacked message given back: to its old place, marked redelivered."""
        if self.is_stream:
            return  # a stream keeps every message anyway
        self._push(_with(envelope, redelivered=True))

    def _push(self, envelope: Envelope) -> None:
        priority = 0
        if self.max_priority is not None:
            priority = min(max(envelope.properties.priority or 0, 0), self.max_priority)
        heapq.heappush(self._ready, (-priority, envelope.seq, envelope))
        if envelope.expires_at is not None:
            self._schedule(envelope.expires_at)

    def purge(self) -> int:
        count = len(self._ready)
        self._ready.clear()
        return count

    # --- taking messages out ------------------------------------------------------------------

    def take(self) -> Envelope | None:
        """The head message, or None; expired messages met on the way are dead-lettered."""
        now = self.clock.now()
        while self._ready:
            _, _, envelope = heapq.heappop(self._ready)
            if envelope.expires_at is not None and envelope.expires_at <= now:
                self.dead_letter(self, envelope, "expired")
                continue
            return envelope
        return None

    def dispatch(self) -> None:
        """Hand messages to consumers with room, taking turns, until one side runs out."""
        if self.is_stream:
            self._dispatch_stream()
            return
        while self._ready and self.consumers:
            consumer = self._next_with_room()
            if consumer is None:
                return
            envelope = self.take()
            if envelope is None:
                return
            consumer.channel.deliver(consumer, envelope)

    def _next_with_room(self) -> Consumer | None:
        count = len(self.consumers)
        for step in range(count):
            consumer = self.consumers[(self._turn + step) % count]
            if consumer.has_room():
                self._turn = (self._turn + step + 1) % count
                return consumer
        return None

    def _dispatch_stream(self) -> None:
        for consumer in list(self.consumers):
            while consumer.position < len(self._log) and consumer.has_room():
                _, envelope = self._log[consumer.position]
                offset = consumer.position
                consumer.position += 1
                consumer.channel.deliver(consumer, envelope, stream_offset=offset)

    def stream_start(self, offset: object) -> int:
        """Where a stream consumer with `x-stream-offset: offset` starts reading."""
        if offset is None or offset == "next":
            return len(self._log)
        if offset == "first":
            return 0
        if offset == "last":
            return max(len(self._log) - 1, 0)
        if isinstance(offset, bool):
            raise PreconditionFailedError(f"x-stream-offset {offset!r} is not an offset")
        if isinstance(offset, int):
            return min(max(offset, 0), len(self._log))
        if isinstance(offset, datetime):
            moment = offset if offset.tzinfo else offset.replace(tzinfo=UTC)
            for position, (appended, _) in enumerate(self._log):
                if appended >= moment:
                    return position
            return len(self._log)
        raise PreconditionFailedError(f"x-stream-offset {offset!r} is not understood")

    # --- expiry -------------------------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.clock.call_at(when, self._expire)

    def _expire(self) -> None:
        """Dead-letter every ready message whose time has come, then wait for the next one."""
        self._timer = self._timer_at = None
        now = self.clock.now()
        keep: list[tuple[int, int, Envelope]] = []
        expired: list[Envelope] = []
        for item in self._ready:
            envelope = item[2]
            if envelope.expires_at is not None and envelope.expires_at <= now:
                expired.append(envelope)
            else:
                keep.append(item)
        heapq.heapify(keep)
        self._ready = keep
        for envelope in sorted(expired, key=lambda e: (e.expires_at or 0.0, e.seq)):
            self.dead_letter(self, envelope, "expired")
        upcoming = [e.expires_at for _, _, e in self._ready if e.expires_at is not None]
        if upcoming:
            self._schedule(min(upcoming))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None


def _with(envelope: Envelope, **changes: Any) -> Envelope:
    from dataclasses import replace

    return replace(envelope, **changes)
