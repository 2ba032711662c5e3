"""Channels and messages: what the broker must hold and what travels through it.

A channel is either an exchange (`is: routingKey`) or a queue (`is: queue`, with our bindings,
arguments and policy). Channels and messages are parsed once per definition, however many
documents `$ref` them, so each problem is reported once, where it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from spectask.codegen import extensions
from spectask.codegen.diagnostics import Diagnostics, JsonPath
from spectask.codegen.fields import flag
from spectask.codegen.load import SpecSet
from spectask.codegen.nodes import Node
from spectask.codegen.queues import parse_queue
from spectask.codegen.schema import schema_name
from spectask.runtime.topology import BindingSpec, ExchangeSpec, QueueSpec, TaskPolicy

EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
RESULT = "x-spectask-result"
Origin = tuple[str, JsonPath]


@dataclass(frozen=True)
class Message:
    """A message definition; `schema` names its payload in components.schemas."""

    file: str
    path: JsonPath
    name: str
    message_type: str
    schema: str
    # `x-spectask-result`: the schema of what its handler returns (TaskResult.result)
    result_schema: str | None = None

    @property
    def task_type(self) -> str:
        """`image_processing.resize` -> `image_processing`."""
        return self.message_type.partition(".")[0]


@dataclass(frozen=True)
class Channel:
    """A channel definition: an exchange, or a queue with its bindings and policy."""

    file: str
    path: JsonPath
    exchange: ExchangeSpec | None
    queue: QueueSpec | None
    policy: TaskPolicy | None
    messages: tuple[Message, ...]
    binding_nodes: tuple[tuple[Node, BindingSpec], ...] = ()
    policy_node: Node | None = None
    # `address: null` and no bindings: a reply address known only at run time (replyTo).
    dynamic: bool = False
    # `x-spectask-copies: <exchange>`: bound with every key the other queues have there
    copies: str | None = None


def _name(node: Node, diagnostics: Diagnostics, what: str) -> str | None:
    name = node.child("name")
    if name is None or not isinstance(name.value, str) or not name.value:
        diagnostics.error(name or node, f"{what} has no name", f"write {what}: {{name: ...}}")
        return None
    return name.value


def _exchange(amqp: Node, diagnostics: Diagnostics) -> ExchangeSpec | None:
    node = amqp.child("exchange")
    if node is None or not isinstance(node.value, dict):
        diagnostics.error(
            node or amqp,
            "routingKey channel has no exchange",
            "write exchange: {name: tasks, type: topic, durable: true}",
        )
        return None
    name = _name(node, diagnostics, "exchange")
    kind = node.child("type")
    if kind is None or kind.value not in EXCHANGE_TYPES:
        diagnostics.error(
            kind or node,
            f"exchange type must be one of {', '.join(EXCHANGE_TYPES)}",
            "spectask routes with topic exchanges; write type: topic",
        )  # and carry on with it, so bindings to this exchange are not reported as dangling
    durable = flag(node, "durable", True, diagnostics)
    auto_delete = flag(node, "autoDelete", False, diagnostics)
    kind_name = str(kind.value) if kind is not None else "topic"
    return None if name is None else ExchangeSpec(name, kind_name, durable, auto_delete)


def parse_message(spec: SpecSet, node: Node, diagnostics: Diagnostics) -> Message | None:
    """A message definition: its payload schema name and its `messageType`."""
    if not isinstance(node.value, dict):
        diagnostics.error(node, "message must be a mapping", "write {payload: ..., bindings: ...}")
        return None
    payload = node.child("payload")
    target = spec.resolve(payload)
    schema: str | None = None
    if payload is None:
        diagnostics.error(node, "message has no payload", "add payload: {$ref: ...}")
    elif target is not None and schema_name(target) is None:
        diagnostics.error(
            payload,
            "payload must be a $ref to a schema in components.schemas",
            "move the schema to components.schemas; its name becomes the model class name",
        )
    elif target is not None:
        schema = schema_name(target)
    kind = spec.get(spec.get(spec.get(node, "bindings"), "amqp"), "messageType")
    if kind is None or not isinstance(kind.value, str) or not kind.value:
        diagnostics.error(
            kind or node,
            "message has no bindings.amqp.messageType",
            "spectask dispatches on it: add bindings: {amqp: {messageType: <task_type>.<name>}}",
        )
        return None
    name = node.value.get("name", node.path[-1])
    result = _result_schema(spec, node, diagnostics)
    return Message(node.file, node.path, str(name), kind.value, schema, result) if schema else None


def _result_schema(spec: SpecSet, message: Node, diagnostics: Diagnostics) -> str | None:
    """The component schema a message's `x-spectask-result` names, if it has one."""
    node = message.child(RESULT)
    if node is None:
        return None
    target = spec.resolve(node)
    name = schema_name(target) if target is not None else None
    if name is None:
        diagnostics.error(
            node,
            f"{RESULT} must be a $ref to a schema in components.schemas",
            "write x-spectask-result: {$ref: '#/components/schemas/<Result>'}",
        )
    return name


def parse_channel(
    spec: SpecSet, node: Node, priorities: Mapping[str, int], diagnostics: Diagnostics
) -> Channel | None:
    """A channel definition (already resolved), with the messages it carries."""
    if not isinstance(node.value, dict):
        diagnostics.error(node, "channel must be a mapping", "write {address: ..., bindings: ...}")
        return None
    amqp = spec.get(spec.get(node, "bindings"), "amqp")
    kind = spec.get(amqp, "is")
    if "address" in node.value and node.value["address"] is None and amqp is None:
        messages = _messages(spec, node, diagnostics)
        return Channel(node.file, node.path, None, None, None, messages, dynamic=True)
    if amqp is None or kind is None or kind.value not in ("queue", "routingKey"):
        diagnostics.error(
            kind or amqp or node,
            "channel bindings.amqp.is must be 'queue' or 'routingKey'",
            "a routingKey channel declares an exchange, a queue channel a queue",
        )
        return None
    if kind.value == "queue":
        queue, policy, bindings = parse_queue(amqp, priorities, diagnostics)
        policy_node = amqp.child("x-spectask-policy")
        channel = Channel(
            node.file,
            node.path,
            None,
            queue,
            policy,
            (),
            tuple(bindings),
            policy_node,
            copies=_copies(amqp, diagnostics),
        )
    else:
        for key in extensions.CHANNEL_KEYS:
            if (misplaced := amqp.child(key)) is not None:
                diagnostics.error(misplaced, f"{key} only applies to a queue channel", "move it")
        exchange = _exchange(amqp, diagnostics)
        channel = Channel(node.file, node.path, exchange, None, None, ())
    messages = _messages(spec, node, diagnostics)
    if channel is None:
        return None
    _check_side_effects(channel, messages, diagnostics)
    return Channel(
        node.file,
        node.path,
        channel.exchange,
        channel.queue,
        channel.policy,
        messages,
        channel.binding_nodes,
        channel.policy_node,
        copies=channel.copies,
    )


def _check_side_effects(
    channel: Channel, messages: tuple[Message, ...], diagnostics: Diagnostics
) -> None:
    """`sideEffects` may only name message types this channel carries (a typo protects nothing)."""
    where = channel.policy_node.child("sideEffects") if channel.policy_node else None
    if channel.policy is None or where is None:
        return
    carried = sorted(message.message_type for message in messages)
    for unknown in sorted(channel.policy.side_effects - set(carried)):
        diagnostics.error(
            where,
            f"sideEffects names {unknown!r}, which this channel does not carry",
            f"list message types of this channel: {', '.join(carried) or '(none)'}",
        )


def _copies(amqp: Node, diagnostics: Diagnostics) -> str | None:
    node = amqp.child(extensions.COPIES)
    if node is None:
        return None
    if not isinstance(node.value, str) or not node.value:
        diagnostics.error(node, f"{extensions.COPIES} must name an exchange", "write: tasks")
        return None
    return node.value


def _messages(spec: SpecSet, node: Node, diagnostics: Diagnostics) -> tuple[Message, ...]:
    messages = []
    listed = spec.get(node, "messages")
    for _, child in listed.items() if listed is not None else ():
        target = spec.resolve(child)
        if target is not None and (message := parse_message(spec, target, diagnostics)):
            messages.append(message)
    return tuple(messages)


def origin(item: Message | Channel | Node) -> Origin:
    """The identity of a definition: the file and JSON path it was written at."""
    return (item.file, item.path)
