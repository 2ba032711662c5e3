"""The in-memory broker: exchanges, queues and the routing between them, for one name.

A `Hub` is what a RabbitMQ node is to aio-pika: every `memory://NAME` connection in the process
talks to the hub NAME, so a producer, workers and a collector started on the same URL see the
same queues. Hubs live until `forget` (tests use fresh names, like unique queue names on a
shared node).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spectask.runtime.memory.clock import Clock, RealClock
from spectask.runtime.memory.messages import Envelope, Properties, wire_table
from spectask.runtime.memory.queues import Consumer, QueueState
from spectask.runtime.memory.routing import ExchangeState
from spectask.runtime.transport import MEMORY_SCHEME, NotFoundError, PreconditionFailedError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"
PREDECLARED = (("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"))
# Queue properties RabbitMQ compares on a redeclare (others may differ freely).
COMPARED_ARGUMENTS = (
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-message-ttl",
    "x-queue-type",
    "x-expires",
    "x-max-length",
)


class Hub:
    """One in-memory broker (see the module docstring)."""

    def __init__(self, name: str, clock: Clock | None = None) -> None:
        self.name = name
        self.clock: Clock = clock or RealClock()
        self.exchanges: dict[str, ExchangeState] = {
            name: ExchangeState(name, kind, durable=True) for name, kind in PREDECLARED
        }
        self.queues: dict[str, QueueState] = {}
        self.reply_consumers: dict[str, Consumer] = {}

    @property
    def url(self) -> str:
        return f"{MEMORY_SCHEME}{self.name}"

    # --- declaring ----------------------------------------------------------------------------

    def declare_exchange(
        self, name: str, kind: str, *, durable: bool, auto_delete: bool, passive: bool
    ) -> ExchangeState:
        if name == "":
            return ExchangeState("", "direct", durable=True)
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise NotFoundError(f"NOT_FOUND - no exchange {name!r} in vhost of {self.url}")
            return existing
        if existing is None:
            existing = self.exchanges[name] = ExchangeState(name, kind, durable, auto_delete)
        elif (existing.type, existing.durable, existing.auto_delete) != (
            kind,
            durable,
            auto_delete,
        ):
            raise PreconditionFailedError(
                f"PRECONDITION_FAILED - inequivalent arg for exchange {name!r}: declared as "
                f"{existing.type} durable={existing.durable}, now {kind} durable={durable}"
            )
        return existing

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        passive: bool,
        arguments: Mapping[str, Any] | None,
        owner: object,
    ) -> QueueState:
        if not name:
            name = f"amq.gen-{uuid.uuid4().hex}"
        existing = self.queues.get(name)
        if passive:
            if existing is None:
                raise NotFoundError(f"NOT_FOUND - no queue {name!r} in vhost of {self.url}")
            return existing
        wanted = dict(arguments or {})
        if existing is not None:
            old = {k: existing.arguments.get(k) for k in COMPARED_ARGUMENTS}
            new = {k: wanted.get(k) for k in COMPARED_ARGUMENTS}
            if old != new or existing.durable != durable:
                raise PreconditionFailedError(
                    f"PRECONDITION_FAILED - inequivalent arg for queue {name!r}: "
                    f"declared with {_shown(old, existing.durable)}, now {_shown(new, durable)}"
                )
            return existing
        if wanted.get("x-queue-type") == "stream" and (not durable or exclusive or auto_delete):
            raise PreconditionFailedError(f"stream {name!r} must be durable, not exclusive")
        queue = QueueState(
            name,
            self.clock,
            self.dead_letter,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=wanted,
            owner=owner if exclusive else None,
        )
        self.queues[name] = queue
        return queue

    def queue(self, name: str) -> QueueState:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFoundError(f"NOT_FOUND - no queue {name!r} in vhost of {self.url}")
        return queue

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.queue(queue)
        if exchange == "":
            raise PreconditionFailedError("ACCESS_REFUSED - the default exchange takes no binds")
        state = self.exchanges.get(exchange)
        if state is None:
            raise NotFoundError(f"NOT_FOUND - no exchange {exchange!r} in vhost of {self.url}")
        state.bindings.add((queue, routing_key))

    def delete_queue(self, name: str) -> int:
        queue = self.queues.pop(name, None)
        if queue is None:
            return 0
        queue.close()
        for consumer in list(queue.consumers):
            consumer.channel.forget_consumer(consumer)
        for exchange in self.exchanges.values():
            exchange.bindings = {(q, k) for q, k in exchange.bindings if q != name}
        return queue.message_count()

    def delete_exchange(self, name: str) -> None:
        if name.startswith("amq.") or name == "":
            raise PreconditionFailedError(f"ACCESS_REFUSED - exchange {name!r} is built in")
        self.exchanges.pop(name, None)

    def streams_read(self) -> bool:
        """Whether every stream consumer has been given, and has settled, all of its stream.

        For tests: after a publish to a stream (a cancellation), this turns true once every
        follower has handled it, an event a test can wait for instead of sleeping.
        """
        return all(
            consumer.position >= queue.message_count() and consumer.unacked == 0
            for queue in self.queues.values()
            if queue.is_stream
            for consumer in queue.consumers
        )

    # --- routing ------------------------------------------------------------------------------

    def route(self, exchange: str, envelope: Envelope) -> int:
        """Put a copy of `envelope` in every queue `exchange` routes it to; how many took it.

        Raises `NotFoundError` for an exchange that does not exist (RabbitMQ closes the
        channel with 404 then, so nothing is confirmed).
        """
        key = envelope.routing_key
        if exchange == "":
            if key.startswith(REPLY_TO + "."):
                return self._reply(key, envelope)
            names = [key] if key in self.queues else []
        else:
            state = self.exchanges.get(exchange)
            if state is None:
                raise NotFoundError(f"NOT_FOUND - no exchange {exchange!r} in vhost of {self.url}")
            names = state.route(key)
        for name in names:
            self.queues[name].put(envelope.again())
        return len(names)

    def _reply(self, address: str, envelope: Envelope) -> int:
        consumer = self.reply_consumers.get(address)
        if consumer is None:
            return 0  # the caller is gone: its reply is dropped (or returned, if mandatory)
        consumer.channel.deliver(consumer, envelope.again())
        return 1

    def dead_letter(self, queue: QueueState, envelope: Envelope, reason: str) -> None:
        """Republish an expired or rejected message to its queue's dead-letter exchange.

        As RabbitMQ does: the key is `x-dead-letter-routing-key` or the message's own, the
        per-message expiration is dropped (it would expire again), and an `x-death` entry per
        (queue, reason) counts the hops, newest first.
        """
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return
        key = str(queue.arguments.get("x-dead-letter-routing-key") or envelope.routing_key)
        props = envelope.properties
        headers = dict(props.headers)
        deaths = [dict(entry) for entry in headers.get("x-death", []) if isinstance(entry, dict)]
        now = datetime.now(UTC)
        match = next(
            (d for d in deaths if d.get("queue") == queue.name and d.get("reason") == reason), None
        )
        if match is not None:
            deaths.remove(match)
            match["count"] = int(match.get("count", 0)) + 1
            match["time"] = now
        else:
            match = {
                "count": 1,
                "reason": reason,
                "queue": queue.name,
                "time": now,
                "exchange": envelope.exchange,
                "routing-keys": [envelope.routing_key],
            }
            if props.expiration_ms is not None:
                match["original-expiration"] = str(props.expiration_ms)
        headers["x-death"] = [match, *deaths]
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-exchange", envelope.exchange)
        headers["x-last-death-reason"] = reason
        headers["x-last-death-queue"] = queue.name
        headers["x-last-death-exchange"] = envelope.exchange
        moved = Envelope(
            body=envelope.body,
            properties=Properties(**{**_fields(props), "headers": wire_table(headers)}),
            exchange=str(exchange),
            routing_key=key,
        )
        try:
            self.route(str(exchange), moved)
        except NotFoundError:
            log.debug("dead-letter exchange %r of %s is missing; dropped", exchange, queue.name)


def _fields(props: Properties) -> dict[str, Any]:
    return {
        "content_type": props.content_type,
        "delivery_mode": props.delivery_mode,
        "priority": props.priority,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "expiration_ms": None,
        "message_id": props.message_id,
        "timestamp": props.timestamp,
        "type": props.type,
    }


def _shown(arguments: Mapping[str, Any], durable: bool) -> str:
    set_ = {k: v for k, v in arguments.items() if v is not None}
    return f"durable={durable} {set_}"


_HUBS: dict[str, Hub] = {}


def hub(url_or_name: str, *, clock: Clock | None = None) -> Hub:
    """The hub of a `memory://NAME` URL (or NAME), made on first use (with `clock`, if given)."""
    name = url_or_name.removeprefix(MEMORY_SCHEME).strip("/") or "default"
    found = _HUBS.get(name)
    if found is None:
        found = _HUBS[name] = Hub(name, clock)
    elif clock is not None and found.clock is not clock:
        raise PreconditionFailedError(f"in-memory broker {name!r} already runs on another clock")
    return found


def new_hub(*, clock: Clock | None = None, prefix: str = "spectask") -> Hub:
    """A fresh, uniquely named hub (a throwaway broker)."""
    return hub(f"{prefix}-{uuid.uuid4().hex[:12]}", clock=clock)


def forget(url_or_name: str) -> None:
    """Drop a hub (its queues and messages); connections to it keep working on the old one."""
    _HUBS.pop(url_or_name.removeprefix(MEMORY_SCHEME).strip("/") or "default", None)
