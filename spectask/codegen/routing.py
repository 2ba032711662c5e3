"""Where messages go: the declared topology must be consistent and every send must land.

Publishes are mandatory, so a routing key no binding matches would fail at runtime with
`UnroutableError`; checking it here turns that into a spec error with a line to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache

from spectask.codegen.channels import Channel, Origin
from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.operations import Operation
from spectask.runtime.topology import ANY_MESSAGE_SUFFIX, ExchangeSpec, QueueSpec


def topic_matches(pattern: str, key: str) -> bool:
    """RabbitMQ topic matching: `*` is exactly one word, `#` zero or more words."""
    words, parts = tuple(pattern.split(".")), tuple(key.split("."))

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(parts)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and words[i] in ("*", parts[j]) and match(i + 1, j + 1)

    return match(0, 0)


def routes(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a binding with `binding_key` takes a message published with `routing_key`."""
    if exchange_type == "topic":
        return topic_matches(binding_key, routing_key)
    if exchange_type == "direct":
        return binding_key == routing_key
    return True  # fanout ignores the key; headers routes on headers, not on the key


def check_topology(
    channels: Sequence[Channel], d: Diagnostics
) -> tuple[dict[str, ExchangeSpec], dict[str, QueueSpec]]:
    """Exchanges and queues by name; reports duplicates, conflicts and dangling bindings."""
    exchanges: dict[str, ExchangeSpec] = {}
    queues: dict[str, QueueSpec] = {}
    for channel in channels:
        exchange = channel.exchange
        if exchange is not None and exchanges.setdefault(exchange.name, exchange) != exchange:
            d.error(
                channel,
                f"exchange {exchange.name!r} is declared again with other settings",
                "declare each exchange in one channel and $ref it elsewhere",
            )
        queue = channel.queue
        if queue is not None and queue.name in queues:
            d.error(
                channel,
                f"queue {queue.name!r} is declared by two channels",
                "declare each queue in one channel and $ref that channel elsewhere",
            )
        elif queue is not None:
            queues[queue.name] = queue
    for channel in channels:
        _check_queue(channel, exchanges, d)
    return exchanges, queues


def derive_copies(channels: Mapping[Origin, Channel], d: Diagnostics) -> dict[Origin, Channel]:
    """Bind each `x-spectask-copies: <exchange>` queue with the other queues' keys there.

    The collector's copy of every task (`collector.tasks`, in the protocol document) must get
    exactly what the application's task queues get from `tasks`: written by hand it would
    miss a task type added later, which would then show UNKNOWN while it waits.
    """
    exchanges = {c.exchange.name for c in channels.values() if c.exchange is not None}
    derived = dict(channels)
    for key, channel in channels.items():
        if channel.copies is None or channel.queue is None:
            continue
        if channel.copies not in exchanges:
            d.error(
                channel,
                f"{channel.queue.name!r} copies exchange {channel.copies!r}, which no channel "
                "declares",
                "name an exchange a routingKey channel declares: " + ", ".join(sorted(exchanges)),
            )
            continue
        keys = {
            binding
            for other in channels.values()
            if other.queue is not None and other.copies is None
            for binding in other.queue.bindings
            if binding.exchange == channel.copies
        }
        bindings = tuple(sorted(keys | set(channel.queue.bindings), key=str))
        derived[key] = replace(channel, queue=replace(channel.queue, bindings=bindings))
    return derived


def check_copy_queues(channels: Sequence[Channel], d: Diagnostics) -> None:
    """A copy queue must see everything the queues beside it on an exchange see.

    A copy queue takes any message type (`<prefix>*`, e.g. the collector's `collector.tasks`,
    which learns from the broker's copy of each task that it is QUEUED). Bound with specific
    keys (not `#`, which would swallow keys no worker takes, so they would no longer be
    unroutable), it silently misses a task type whose queue was added without its key here:
    that type would show UNKNOWN while it waits. Checked, so it cannot be forgotten.
    """
    copies = [
        channel
        for channel in channels
        if channel.queue is not None
        and any(message.message_type.endswith(ANY_MESSAGE_SUFFIX) for message in channel.messages)
    ]
    for copy in copies:
        assert copy.queue is not None
        patterns: dict[str, list[str]] = {}
        for binding in copy.queue.bindings:
            patterns.setdefault(binding.exchange, []).append(binding.routing_key)
        for other in channels:
            if other.queue is None or other in copies:
                continue
            for binding in other.queue.bindings:
                keys = patterns.get(binding.exchange)
                if keys is None or any(topic_matches(p, binding.routing_key) for p in keys):
                    continue
                d.error(
                    copy,
                    f"copy queue {copy.queue.name!r} does not get what queue "
                    f"{other.queue.name!r} gets from exchange {binding.exchange!r} "
                    f"(binding key {binding.routing_key!r})",
                    f"add {{exchange: {binding.exchange}, routingKey: '{binding.routing_key}'}} "
                    "to its x-spectask-bindings",
                )


def _check_queue(channel: Channel, exchanges: Mapping[str, ExchangeSpec], d: Diagnostics) -> None:
    for node, binding in channel.binding_nodes:
        if binding.exchange not in exchanges:
            d.error(
                node,
                f"binding to exchange {binding.exchange!r}, which no channel declares",
                "add a channel with is: routingKey that declares it; declared: "
                + ", ".join(sorted(exchanges)),
            )
    if channel.queue is None:
        return
    arguments = channel.queue.arguments_dict()
    dead_letter = arguments.get("x-dead-letter-exchange")
    if isinstance(dead_letter, str) and dead_letter and dead_letter not in exchanges:
        d.error(
            channel,
            f"x-dead-letter-exchange {dead_letter!r} is not declared by any channel",
            "add a channel with is: routingKey for it",
        )
    maximum = arguments.get("x-max-priority")
    default = channel.policy.default_priority if channel.policy is not None else 0
    if default > 0:
        if not isinstance(maximum, int):
            d.error(
                channel,
                "the policy sets a default priority, but the queue has no x-max-priority",
                "RabbitMQ ignores priorities without it; "
                "add x-spectask-arguments: {x-max-priority: 10}",
            )
        elif default > maximum:
            d.error(
                channel,
                f"default priority {default} exceeds the queue's x-max-priority {maximum}",
                "RabbitMQ would cap it silently; raise x-max-priority or lower defaultPriority",
            )


def send_exchange(
    op: Operation,
    exchanges: Mapping[str, ExchangeSpec],
    queues: Mapping[str, QueueSpec],
    d: Diagnostics,
) -> str | None:
    """The exchange a send operation publishes to; reports keys no binding would route."""
    key = op.routing_key
    at = (*op.path, "bindings", "amqp", "cc")
    if op.channel.exchange is not None:
        exchange = op.channel.exchange
        bound = [b for q in queues.values() for b in q.bindings if b.exchange == exchange.name]
        if not any(routes(exchange.type, b.routing_key, key) for b in bound):
            keys = ", ".join(sorted({b.routing_key for b in bound})) or "(no bindings)"
            d.at(
                op.file,
                at,
                f"routing key {key!r} matches no queue bound to exchange {exchange.name!r}",
                f"bind a queue to it or change the key; binding keys: {keys}",
            )
            return None
        return exchange.name
    if op.channel.queue is None:
        return None  # the queue definition is broken; that is reported where it is written
    matching = sorted(
        {
            b.exchange
            for b in op.channel.queue.bindings
            if b.exchange in exchanges and routes(exchanges[b.exchange].type, b.routing_key, key)
        }
    )
    if len(matching) != 1:
        bindings = ", ".join(f"{b.exchange}:{b.routing_key}" for b in op.channel.queue.bindings)
        problem = "matches no binding" if not matching else "matches bindings of several exchanges"
        d.at(
            op.file,
            at,
            f"routing key {key!r} {problem} of queue {op.channel.queue.name!r}",
            f"use a key the queue's bindings route ({bindings or 'none'})",
        )
        return None
    return matching[0]
