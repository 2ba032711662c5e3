"""An in-memory AMQP broker behind `spectask.runtime.transport`, for tests without RabbitMQ.

Select it with `AMQP_URL=memory://NAME` (every connection to NAME in this process shares one
broker) or `Broker.in_memory()`. It keeps the semantics spectask's behaviour depends on —
topic routing, mandatory/unroutable, confirms, ack/nack/requeue, redelivery when a channel
goes away, priorities, per-queue TTL + dead-lettering on a controllable clock, streams,
direct reply-to — and nothing else (see `queues` for what is not modelled). It is for fast
tests that also run on RabbitMQ, never instead of them.
"""

from __future__ import annotations

from spectask.runtime.memory.channel import MemoryChannel, MemoryConnection
from spectask.runtime.memory.clock import Clock, FakeClock, RealClock, SkippingClock
from spectask.runtime.memory.hub import Hub, forget, hub, new_hub
from spectask.runtime.memory.routing import topic_matches

__all__ = [
    "Clock",
    "FakeClock",
    "Hub",
    "MemoryChannel",
    "MemoryConnection",
    "RealClock",
    "SkippingClock",
    "connect_memory",
    "forget",
    "hub",
    "new_hub",
    "topic_matches",
]


def connect_memory(url: str) -> MemoryConnection:
    """A new connection to the hub of `url` (`memory://NAME`)."""
    return MemoryConnection(hub(url))
