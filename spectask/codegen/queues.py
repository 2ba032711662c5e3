"""Queue channels: the queue, its bindings to exchanges, its arguments and its task policy.

The AMQP binding cannot say "bound to exchange X with key K" nor carry queue arguments, so these
live in `x-spectask-bindings` and `x-spectask-arguments`; their keys and values are checked
strictly because RabbitMQ would take a misspelt argument without a word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from spectask.codegen import extensions
from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.fields import Rule, check_fields, flag, is_int
from spectask.codegen.nodes import Node
from spectask.runtime.topology import ArgumentValue, BindingSpec, QueueSpec, TaskPolicy

DELIVERY_LIMIT = "x-delivery-limit"
DEFAULT_DELIVERY_LIMIT = 10
"""Deliveries of one enqueued task before a quorum queue dead-letters it (reason
`delivery_limit`) when its x-spectask-policy names no `deliveryLimit`. The broker counts every
return of a delivery (a worker killed mid-task, a lost connection, a RequeueLater while the next
hop is down), not the retries, each of which is a new enqueue through its tier; the tasks a
killed worker had prefetched are counted too, so the limit is generous. Classic queues have no
such limit (the runtime declares them without it)."""


def _string(value: object) -> bool:
    return isinstance(value, str)


def _count(value: Any) -> bool:
    return is_int(value) and value >= 0


ARGUMENTS = {
    "x-max-priority": Rule(lambda v: is_int(v) and 1 <= v <= 255, "an integer in 1..255", "10"),
    "x-queue-type": Rule(
        lambda v: v in ("classic", "quorum", "stream"), "classic, quorum or stream", "classic"
    ),
    "x-dead-letter-exchange": Rule(_string, "an exchange name", "dead_letter"),
    "x-dead-letter-routing-key": Rule(_string, "a routing key", "dead"),
    "x-message-ttl": Rule(_count, "milliseconds >= 0", "60000"),
    "x-expires": Rule(lambda v: is_int(v) and v >= 1, "milliseconds >= 1", "3600000"),
    "x-max-length": Rule(_count, "an integer >= 0", "100000"),
    "x-max-length-bytes": Rule(_count, "an integer >= 0", "1073741824"),
    "x-overflow": Rule(
        lambda v: v in ("drop-head", "reject-publish", "reject-publish-dlx"),
        "drop-head, reject-publish or reject-publish-dlx",
        "reject-publish",
    ),
    "x-max-age": Rule(
        lambda v: isinstance(v, str) and re.fullmatch(r"[1-9][0-9]*[YMDhms]", v) is not None,
        "a stream retention like 7D (Y, M, D, h, m or s)",
        "7D",
    ),
    "x-stream-max-segment-size-bytes": Rule(
        lambda v: is_int(v) and v >= 1, "bytes >= 1 (a stream's retention unit)", "1000000"
    ),
    "x-delivery-limit": Rule(_count, "an integer >= 0", "5"),
    "x-single-active-consumer": Rule(lambda v: isinstance(v, bool), "true or false", "true"),
}
BINDING = {
    "exchange": Rule(lambda v: isinstance(v, str) and v != "", "an exchange name", "tasks"),
    "routingKey": Rule(_string, "a binding key", "'image_processing.#'"),
}


def parse_arguments(node: Node, d: Diagnostics) -> tuple[tuple[str, ArgumentValue], ...]:
    """`x-spectask-arguments`: RabbitMQ queue arguments, sorted by name."""
    return tuple(sorted(check_fields(node, ARGUMENTS, d).items()))


def parse_bindings(node: Node, d: Diagnostics) -> list[tuple[Node, BindingSpec]]:
    """`x-spectask-bindings`: each binding with the node it was written at."""
    if not isinstance(node.value, list):
        d.error(node, "must be a list", "write - {exchange: tasks, routingKey: 'a.#'}")
        return []
    bindings = []
    for item in node.elements():
        values = check_fields(item, BINDING, d)
        missing = [key for key in BINDING if isinstance(item.value, dict) and key not in item.value]
        if missing:
            d.error(
                item,
                f"binding is missing {' and '.join(missing)}",
                "write {exchange: <exchange name>, routingKey: <binding key>}",
            )
        elif len(values) == len(BINDING):
            bindings.append((item, BindingSpec(values["exchange"], values["routingKey"])))
    return bindings


def parse_queue(
    amqp: Node, priorities: Mapping[str, int], d: Diagnostics
) -> tuple[QueueSpec | None, TaskPolicy | None, list[tuple[Node, BindingSpec]]]:
    """The queue of a `bindings.amqp` with `is: queue`, its policy and its bindings."""
    node = amqp.child("queue")
    if node is None or not isinstance(node.value, dict):
        d.error(node or amqp, "queue channel has no queue", "write queue: {name: tasks.x}")
        return None, None, []
    name = node.child("name")
    if name is None or not isinstance(name.value, str) or not name.value:
        d.error(name or node, "queue has no name", "write queue: {name: tasks.x, durable: true}")
    found = amqp.child("x-spectask-bindings")
    bindings = parse_bindings(found, d) if found is not None else []
    arguments = amqp.child("x-spectask-arguments")
    policy = amqp.child("x-spectask-policy")
    queue = QueueSpec(
        name=name.value if name is not None and isinstance(name.value, str) else "",
        durable=flag(node, "durable", True, d),
        exclusive=flag(node, "exclusive", False, d),
        auto_delete=flag(node, "autoDelete", False, d),
        arguments=parse_arguments(arguments, d) if arguments is not None else (),
        bindings=tuple(sorted({binding for _, binding in bindings}, key=str)),
    )
    parsed_policy = extensions.parse_policy(policy, priorities, d) if policy is not None else None
    if parsed_policy is not None and policy is not None:
        queue = replace(queue, arguments=_with_delivery_limit(queue.arguments, policy))
    return (queue if queue.name else None), parsed_policy, bindings


def _with_delivery_limit(
    arguments: tuple[tuple[str, ArgumentValue], ...], policy: Node
) -> tuple[tuple[str, ArgumentValue], ...]:
    """A task queue's arguments with its delivery limit: `x-spectask-arguments` if it names
    one, else the policy's `deliveryLimit`, else DEFAULT_DELIVERY_LIMIT (checked already)."""
    stated = dict(arguments)
    if DELIVERY_LIMIT in stated:
        return arguments
    node = policy.child("deliveryLimit")
    limit = node.value if node is not None and is_int(node.value) else DEFAULT_DELIVERY_LIMIT
    return tuple(sorted({**stated, DELIVERY_LIMIT: limit}.items()))
