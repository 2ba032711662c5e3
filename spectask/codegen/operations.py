"""Operations of a service document: what it sends and what it receives.

Each operation names one channel of its own document (`#/channels/<name>`) and one of that
channel's messages; a send also fixes its routing key (`cc`, exactly one) and persistence
(`deliveryMode: 2`), because the runtime publishes exactly what the spec says.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass

from spectask.codegen.channels import Channel, Message, Origin, origin
from spectask.codegen.diagnostics import Diagnostics, JsonPath
from spectask.codegen.load import Document, SpecSet
from spectask.codegen.nodes import Node

_ID = re.compile(r"^[a-z][A-Za-z0-9]*$")
_LOCAL_CHANNEL = re.compile(r"^#/channels/([^/]+)$")
# Names the generated classes use themselves; an operation must not shadow them.
RESERVED = frozenset({"run", "handlers", "submit_many", "submit_stream", "wait"})
# and the prefixes of the methods generated beside each submit (`prepare_x`, `result_of_x`)
RESERVED_PREFIXES = ("prepare_", "result_of_")


@dataclass(frozen=True)
class Operation:
    """One operation of a service, resolved to its channel and message definitions."""

    file: str
    path: JsonPath
    operation_id: str
    action: str
    channel: Channel
    message: Message
    routing_key: str
    summary: str
    reply: Message | None = None
    persistent: bool = True
    runtime: str | None = None


def snake_case(name: str) -> str:
    """`submitImageResize` -> `submit_image_resize`; `getHTTPStatus` -> `get_http_status`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _check_id(node: Node, operation_id: str, diagnostics: Diagnostics) -> bool:
    snake = snake_case(operation_id)
    if not _ID.match(operation_id) or keyword.iskeyword(snake):
        diagnostics.error(
            node,
            f"operation id {operation_id!r} is not a camelCase name",
            "it becomes a Python method name; write e.g. submitImageResize",
        )
        return False
    if snake in RESERVED or snake.startswith(RESERVED_PREFIXES):
        diagnostics.error(
            node,
            f"operation id {operation_id!r} clashes with a generated method ({snake})",
            f"rename it; {', '.join(sorted(RESERVED))}, prepare_* and result_of_* are taken",
        )
        return False
    return True


def _channel(
    spec: SpecSet, doc: Document, op: Node, channels: Mapping[Origin, Channel], d: Diagnostics
) -> Channel | None:
    node = op.child("channel")
    ref = node.ref if node is not None else None
    match = _LOCAL_CHANNEL.match(ref or "")
    hint = "write channel: {$ref: '#/channels/<name>'} naming a channel of this document"
    if node is None or ref is None:
        d.error(node or op, "operation has no channel $ref", hint)
        return None
    if match is None:
        d.error(node, f"operation channel {ref!r} is not in this document's channels", hint)
        return None
    listed = spec.get(doc.root, "channels")
    name = match.group(1).replace("~1", "/").replace("~0", "~")
    if listed is None or listed.child(name) is None:
        known = ", ".join(key for key, _ in listed.items()) if listed else "(none)"
        d.error(node, f"operation on unknown channel {name!r}", f"{hint}; known: {known}")
        return None
    target = spec.resolve(node)
    return channels.get(origin(target)) if target is not None else None


def _message(spec: SpecSet, op: Node, channel: Channel, d: Diagnostics) -> Message | None:
    node = op.child("messages")
    items = list(node.elements()) if node is not None else []
    if node is None or len(items) != 1:
        d.error(
            node or op,
            "operation must list exactly one message",
            "write messages: [{$ref: '#/channels/<channel>/messages/<message>'}]; "
            "use one operation per message type",
        )
        return None
    target = spec.resolve(items[0])
    if target is None:
        return None
    for message in channel.messages:
        if origin(message) == origin(target):
            return message
    known = ", ".join(m.name for m in channel.messages) or "(none)"
    d.error(
        items[0],
        "operation message is not among its channel's messages",
        f"reference one of the channel's messages ({known}) or add it to the channel",
    )
    return None


REPLY_LOCATION = "$message.header#/replyTo"
RUNTIME = "x-spectask-runtime"
# Operations the runtime carries out itself (`x-spectask-runtime: <kind>`), by action:
# `cancellations` (receive): the worker reads the cancellation stream, no handler to register;
# `status` (send with reply): the task status request; the client also gets `wait()` on it;
# `heartbeat` (send): the worker's periodic WorkerHeartbeat, which may be transient.
RUNTIME_KINDS = {"cancellations": "receive", "status": "send", "heartbeat": "send"}
# runtime sends that carry news superseded by the next one, so deliveryMode 1 is allowed
TRANSIENT_RUNTIME_KINDS = frozenset({"heartbeat"})


def _runtime(op: Node, action: str, has_reply: bool, d: Diagnostics) -> tuple[bool, str | None]:
    """(ok, kind) of an operation's `x-spectask-runtime`; (True, None) when it has none."""
    node = op.child(RUNTIME)
    if node is None:
        return True, None
    kinds = ", ".join(f"{kind} ({act})" for kind, act in sorted(RUNTIME_KINDS.items()))
    expected = RUNTIME_KINDS.get(node.value) if isinstance(node.value, str) else None
    if expected is None:
        d.error(node, f"unknown {RUNTIME} {node.value!r}", f"spectask knows {kinds}")
        return False, None
    if action != expected or (node.value == "status") != has_reply:
        d.error(
            node,
            f"{RUNTIME}: {node.value} belongs on a {expected} operation"
            + (" with a reply" if node.value == "status" else " without a reply"),
            f"spectask knows {kinds}",
        )
        return False, None
    return True, str(node.value)


def _reply(
    spec: SpecSet, doc: Document, op: Node, channels: Mapping[Origin, Channel], d: Diagnostics
) -> tuple[bool, Message | None]:
    """(ok, the reply message) of an operation's `reply`; (True, None) when it has none."""
    node = spec.get(op, "reply")  # a Reply Object or a $ref to one (components.replies)
    if node is None:
        return True, None
    if not isinstance(node.value, dict):
        d.error(node, "reply must be a mapping", "write reply: {address: ..., channel: ...}")
        return False, None
    location = spec.get(spec.get(node, "address"), "location")
    if location is None or location.value != REPLY_LOCATION:
        d.error(
            location or node,
            f"reply address must be {{location: '{REPLY_LOCATION}'}}",
            "spectask replies to the request's replyTo (RabbitMQ direct reply-to)",
        )
        return False, None
    channel = _channel(spec, doc, node, channels, d)
    if channel is None:
        return False, None
    if not channel.dynamic:
        d.error(
            node.child("channel") or node,
            "reply channel must have address: null and no bindings",
            "its address is the request's replyTo, known only at run time",
        )
        return False, None
    message = _message(spec, node, channel, d)
    return message is not None, message


def _routing_key(spec: SpecSet, op: Node, d: Diagnostics, *, transient: bool = False) -> str | None:
    amqp = spec.get(spec.get(op, "bindings"), "amqp")
    cc = spec.get(amqp, "cc")
    mode = spec.get(amqp, "deliveryMode")
    key: str | None = None
    if cc is None or not isinstance(cc.value, list) or len(cc.value) != 1:
        d.error(
            cc or amqp or op,
            "send operation needs bindings.amqp.cc with exactly one routing key",
            "write bindings: {amqp: {cc: ['<task_type>.<operation>'], deliveryMode: 2}}",
        )
    elif not isinstance(cc.value[0], str) or not cc.value[0]:
        d.error(cc, "routing key must be a non-empty string", "quote it: cc: ['a.b']")
    else:
        key = cc.value[0]
    if transient and mode is not None and mode.value in (1, 2):
        return key
    if mode is None or mode.value != 2:
        d.error(
            mode or amqp or op,
            "send operation must use deliveryMode: 2 (persistent)",
            "spectask never sends transient tasks; write deliveryMode: 2",
        )
        return None
    return key


ROLES = "x-spectask-roles"


def operation_roles(op: Node) -> tuple[str, ...]:
    """The roles a protocol operation belongs to (`x-spectask-roles: [worker, collector]`)."""
    node = op.child(ROLES)
    value = node.value if node is not None else None
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_operations(
    spec: SpecSet,
    doc: Document,
    channels: Mapping[Origin, Channel],
    d: Diagnostics,
    *,
    role: str | None = None,
) -> list[Operation]:
    """The operations of one document; broken ones are reported and left out.

    With `role`, only the operations whose `x-spectask-roles` name it (the protocol's share of
    that role's service); elsewhere `x-spectask-roles` is refused.
    """
    operations: list[Operation] = []
    listed = spec.get(doc.root, "operations")
    for operation_id, ref in listed.items() if listed is not None else ():
        op = spec.resolve(ref)
        if op is None:
            continue
        if role is not None and role not in operation_roles(op):
            continue
        if role is None and (roles := op.child(ROLES)) is not None:
            d.error(
                roles,
                f"{ROLES} belongs to the protocol document's operations only",
                "remove it; the generator adds the protocol's operations to each role itself",
            )
            continue
        action = op.child("action")
        if action is None or action.value not in ("send", "receive"):
            d.error(action or op, "action must be send or receive", "write action: send")
            continue
        valid_id = _check_id(ref, operation_id, d)
        channel = _channel(spec, doc, op, channels, d)
        message = _message(spec, op, channel, d) if channel else None
        replied, reply = _reply(spec, doc, op, channels, d)
        known_runtime, runtime = _runtime(op, action.value, reply is not None, d)
        # a request may be transient, and so may news the next message supersedes
        transient = op.child("reply") is not None or runtime in TRANSIENT_RUNTIME_KINDS
        key = _routing_key(spec, op, d, transient=transient) if action.value == "send" else ""
        if channel and channel.dynamic:
            d.error(
                op.child("channel") or op,
                "operation on a reply channel (address: null)",
                "use such a channel only as an operation's reply.channel",
            )
            continue
        if channel and channel.exchange is not None and action.value == "receive":
            d.error(op, "receive operation on a channel that is not a queue", "use a queue channel")
            continue
        if action.value == "receive" and channel and channel.queue is None:
            continue  # the queue itself is broken; that error is already reported
        if valid_id and channel and message and key is not None and replied and known_runtime:
            summary = op.value.get("summary")
            summary = " ".join(summary.split()) if isinstance(summary, str) else ""
            summary = (
                summary or f"{action.value.capitalize()} a message of type {message.message_type}."
            )
            operations.append(
                Operation(
                    op.file,
                    op.path,
                    operation_id,
                    action.value,
                    channel,
                    message,
                    key,
                    summary,
                    reply,
                    _persistent(spec, op),
                    runtime,
                )
            )
    return operations


def _persistent(spec: SpecSet, op: Node) -> bool:
    mode = spec.get(spec.get(spec.get(op, "bindings"), "amqp"), "deliveryMode")
    return mode is None or mode.value != 1
