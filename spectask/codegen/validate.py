"""Checking the whole spec and, only when it is sound, building the IR from it.

Every check runs and reports into one `Diagnostics`, so a user sees all problems at once; the IR
is built only from a spec without errors, so templates never see half-valid input.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from operator import attrgetter

from spectask.codegen import extensions, retries, routing
from spectask.codegen.channels import Channel, Message, Origin, origin, parse_channel, parse_message
from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.ir import MessageInfo, Project, ReceiveOp, SendOp, Service
from spectask.codegen.load import SPEC_GLOB, Document, SpecSet, check_refs
from spectask.codegen.nodes import Node
from spectask.codegen.operations import (
    Operation,
    operation_roles,
    parse_operations,
    snake_case,
)
from spectask.codegen.schema import collect_schemas
from spectask.protocol import document as protocol, names
from spectask.runtime.topology import ExchangeSpec, QueueSpec, TaskPolicy

_STEM = re.compile(r"^[a-z][a-z0-9_]*$")
_TAKEN_STEMS = frozenset({"models", "topology"})


def _check_document(doc: Document, d: Diagnostics) -> None:
    version = doc.root.child("asyncapi")
    if version is None or not isinstance(version.value, str) or not version.value.startswith("3."):
        d.error(version or doc.root, "asyncapi must be a 3.x version", "write asyncapi: 3.0.0")
    stem = doc.name.removesuffix(SPEC_GLOB[1:])
    if doc.is_service and (
        not _STEM.match(stem) or keyword.iskeyword(stem) or stem in _TAKEN_STEMS
    ):
        d.error(
            doc.root,
            f"service document name {stem!r} cannot be a Python module name",
            "name it like worker.asyncapi.yaml (lower_snake_case, not models or topology)",
        )


def _definitions(
    spec: SpecSet, priorities: Mapping[str, int], d: Diagnostics
) -> tuple[dict[Origin, Channel], dict[Origin, Message]]:
    """Every channel and message definition, once each, however often it is `$ref`ed."""
    channels: dict[Origin, Channel] = {}
    messages: dict[Origin, Message] = {}
    for name in sorted(spec.documents):
        root = spec.documents[name].root
        listed = spec.get(root, "channels")
        for _, ref in listed.items() if listed is not None else ():
            node = spec.resolve(ref)
            if node is not None and origin(node) not in channels:
                channel = parse_channel(spec, node, priorities, d)
                if channel is not None:
                    channels[origin(node)] = channel
                    messages.update((origin(m), m) for m in channel.messages)
        listed = spec.get(spec.get(root, "components"), "messages")
        for _, ref in listed.items() if listed is not None else ():
            node = spec.resolve(ref)
            if node is None or origin(node) in messages:
                continue
            if (message := parse_message(spec, node, d)) is not None:
                messages[origin(node)] = message
    return channels, messages


def _check_message_types(messages: Mapping[Origin, Message], d: Diagnostics) -> None:
    first: dict[str, Message] = {}
    for key in sorted(messages):
        message = messages[key]
        seen = first.setdefault(message.message_type, message)
        if seen is not message:
            d.error(
                message,
                f"messageType {message.message_type!r} is also used by message {seen.name!r}",
                "the worker dispatches on messageType; give each message its own",
            )


def _policies(channels: Mapping[Origin, Channel], d: Diagnostics) -> dict[str, TaskPolicy]:
    """Policies by task type (the part of messageType before the first dot)."""
    policies: dict[str, TaskPolicy] = {}
    for channel in channels.values():
        for message in channel.messages if channel.policy is not None else ():
            assert channel.policy is not None
            if policies.setdefault(message.task_type, channel.policy) != channel.policy:
                d.error(
                    channel,
                    f"task type {message.task_type!r} gets a different policy from another queue",
                    "give each task type one x-spectask-policy",
                )
    return policies


def _check_protocol(spec: SpecSet, d: Diagnostics) -> None:
    """The spec's protocol document must be the very one this spectask ships."""
    found = [doc for _, doc in sorted(spec.documents.items()) if doc.is_protocol]
    hint = f"run `spectask protocol {spec.directory}` to write the copy this spectask ships"
    for doc in found:
        if doc.name != protocol.DOCUMENT_NAME:
            d.error(
                doc.root,
                f"the protocol document must be named {protocol.DOCUMENT_NAME}",
                f"{hint}, and delete {doc.name}",
            )
        elif doc.raw != protocol.shipped_bytes():
            d.error(
                doc.root,
                f"{doc.name} differs from the protocol this spectask ships "
                f"(protocol version {protocol.version()})",
                f"{hint}; never edit it by hand (your task types go in your own documents)",
            )


def _services(
    spec: SpecSet,
    channels: Mapping[Origin, Channel],
    topology: tuple[dict[str, ExchangeSpec], dict[str, QueueSpec]],
    policies: Mapping[str, TaskPolicy],
    d: Diagnostics,
) -> tuple[Service, ...]:
    """One service per service document, each with the protocol's operations of its role.

    A role (worker, producer, collector) without a document of its own still gets a service
    made of the protocol's operations alone: an application need not write a collector.
    """
    proto = spec.protocol
    roles: set[str] = set()
    listed = spec.get(proto.root, "operations") if proto is not None else None
    for _, ref in listed.items() if listed is not None else ():
        op = spec.resolve(ref)
        roles.update(operation_roles(op) if op is not None else ())
    services = []
    for doc in spec.services:
        stem = doc.name.removesuffix(SPEC_GLOB[1:])
        ops = parse_operations(spec, doc, channels, d)
        if proto is not None and stem in roles:
            ops += parse_operations(spec, proto, channels, d, role=stem)
            roles.discard(stem)
        services.append(_service(spec, stem, doc.name, ops, topology, policies, d))
    for role in sorted(roles):
        assert proto is not None
        ops = parse_operations(spec, proto, channels, d, role=role)
        services.append(_service(spec, role, proto.name, ops, topology, policies, d))
    for service in services:
        _check_runtime_needs(service, d)
    return tuple(sorted(services, key=attrgetter("stem")))


def _check_runtime_needs(service: Service, d: Diagnostics) -> None:
    """A service that consumes needs somewhere to send bad input: the runtime refuses to start
    without it, so the generator refuses the spec first."""
    sends = {op.message_type for op in service.send_ops}
    if service.receive_ops and names.DEAD_LETTER_MESSAGE_TYPE not in sends:
        d.at(
            service.source,
            ("operations",),
            f"service {service.stem!r} receives messages but has no send operation of message "
            f"type {names.DEAD_LETTER_MESSAGE_TYPE}, so bad input would have nowhere to go",
            f"add spectask's protocol document ({protocol.DOCUMENT_NAME}; `spectask protocol "
            "DIR` writes it) and name the document worker.asyncapi.yaml, so the generator adds "
            "the worker's publishDeadLetter",
        )


def _service(
    spec: SpecSet,
    stem: str,
    source: str,
    operations: list[Operation],
    topology: tuple[dict[str, ExchangeSpec], dict[str, QueueSpec]],
    policies: Mapping[str, TaskPolicy],
    d: Diagnostics,
) -> Service:
    sends: list[SendOp] = []
    receives: list[ReceiveOp] = []
    methods: dict[str, str] = {}
    ids: set[str] = set()
    protocol_ops: set[str] = set()
    for op in operations:
        if op.operation_id in ids:
            d.error(
                op,
                f"operation id {op.operation_id!r} is already one of the protocol's "
                f"{stem} operations",
                "rename yours; the generator adds the protocol's operations itself",
            )
            continue
        ids.add(op.operation_id)
        if op.file == protocol.DOCUMENT_NAME:
            protocol_ops.add(op.operation_id)
        method, message = snake_case(op.operation_id), op.message
        if methods.setdefault(method, op.operation_id) != op.operation_id:
            d.error(
                op,
                f"operation ids {methods[method]} and {op.operation_id} are both {method}",
                "rename one; method names must differ",
            )
        common = (op.operation_id, method, method.upper())
        if op.action == "send":
            exchange = routing.send_exchange(op, *topology, d)
            policy = policies.get(message.task_type, TaskPolicy())
            params = _request_params(spec, message.schema) if op.reply else None
            status_view = None
            if op.runtime == "status":
                status_view = _status_view(spec, op, params, d)
            sends.append(
                SendOp(
                    *common,
                    exchange or "",
                    op.routing_key,
                    message.message_type,
                    message.task_type,
                    message.schema,
                    policy.default_priority,
                    op.summary,
                    *_reply_fields(op),
                    op.persistent,
                    params,
                    op.runtime,
                    status_view,
                )
            )
        else:
            assert op.channel.queue is not None
            if any(r.message_type == message.message_type for r in receives):
                d.error(
                    op,
                    f"two receive operations take {message.message_type!r}",
                    "the worker dispatches on messageType; keep one receive operation per type",
                )
            policy_key = message.task_type if op.channel.policy is not None else None
            receives.append(
                ReceiveOp(
                    *common,
                    op.channel.queue.name,
                    message.message_type,
                    message.task_type,
                    message.schema,
                    policy_key,
                    op.summary,
                    *_reply_fields(op),
                    op.runtime,
                )
            )
    if receives:  # the runtime publishes a receiving service's protocol sends itself
        sends = [
            replace(send, runtime_only=True) if send.operation in protocol_ops else send
            for send in sends
        ]
    by_id = attrgetter("operation")
    return Service(
        stem, source, tuple(sorted(sends, key=by_id)), tuple(sorted(receives, key=by_id))
    )


def _reply_fields(op: Operation) -> tuple[str | None, str]:
    return (op.reply.schema, op.reply.message_type) if op.reply else (None, "")


SCHEMAS = ("components", "schemas")
# Names a request/reply method uses itself: such a property makes it take the request model.
_TAKEN_NAMES = frozenset({"self", "timeout", "request", "reply", "models"})
STATUS_PARAMS = (("task_ids", "Sequence[str]"),)
_SIMPLE_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def _annotation(schema: object) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind == "array":
        item = _annotation(schema.get("items"))
        return f"Sequence[{item}]" if item else None
    return _SIMPLE_TYPES.get(kind) if isinstance(kind, str) else None


def _schema_node(spec: SpecSet, schema: str) -> Node | None:
    for name in sorted(spec.documents):
        found = spec.get(spec.get(spec.documents[name].root, "components"), "schemas")
        node = found.child(schema) if found is not None else None
        if node is not None:
            return node
    return None


def _status_view(
    spec: SpecSet, op: Operation, params: tuple[tuple[str, str], ...] | None, d: Diagnostics
) -> str | None:
    """The schema of one task in the status reply (`tasks: [<view>]`), which `wait()` returns.

    The status operation is what `wait()` polls: it must take `{task_ids: [string]}` and
    answer `{tasks: [<view with task_id and state>]}`.
    """
    if params != STATUS_PARAMS:
        d.error(
            op,
            f"the status operation {op.operation_id} must take {{task_ids: array of string}} "
            "(required, the only property)",
            "wait() polls it with the ids it waits for",
        )
        return None
    assert op.reply is not None
    reply = _schema_node(spec, op.reply.schema)
    # `get` follows the $ref: a named schema is where the item resolves to
    items = spec.get(spec.get(spec.get(reply, "properties"), "tasks"), "items")
    named = items is not None and len(items.path) == 3 and items.path[:2] == SCHEMAS
    view = str(items.path[2]) if items is not None and named else None
    properties = spec.get(items, "properties")
    fields = properties.value if properties is not None else None
    if view is None or not isinstance(fields, dict) or not {"task_id", "state"} <= set(fields):
        d.error(
            op,
            f"the reply of the status operation {op.operation_id} must be {{tasks: array of "
            "$ref to a schema with task_id and state}",
            "wait() reads each task's state from it",
        )
        return None
    return view


def _request_params(spec: SpecSet, schema: str) -> tuple[tuple[str, str], ...] | None:
    """`task_ids: Sequence[str]` for a request schema of required, simply typed properties."""
    node = _schema_node(spec, schema)
    if node is None or not isinstance(node.value, dict):
        return None
    properties = node.value.get("properties")
    required = node.value.get("required") or []
    if not isinstance(properties, dict) or set(properties) != set(required):
        return None
    params = []
    for key, value in properties.items():
        annotation = _annotation(value)
        if (
            annotation is None
            or not key.isidentifier()
            or keyword.iskeyword(key)
            or key in _TAKEN_NAMES
        ):
            return None
        params.append((key, annotation))
    return tuple(params) or None


def _dead_letter_exchange(services: Sequence[Service]) -> str:
    """The exchange the services publish dead letters to ("" when none does)."""
    exchanges = sorted(
        op.exchange
        for service in services
        for op in service.send_ops
        if op.message_type == names.DEAD_LETTER_MESSAGE_TYPE
    )
    return exchanges[0] if exchanges else ""


def validate(spec: SpecSet, d: Diagnostics) -> Project | None:
    """The IR of a sound spec; None (with everything wrong in `d`) otherwise.

    A file that is not YAML stops here, with its one error at its line: every `$ref` into it
    would otherwise be reported again as pointing nowhere.
    """
    if spec.broken:
        return None
    for name in sorted(spec.documents):
        _check_document(spec.documents[name], d)
    extensions.scan_unknown(spec, d)
    priorities = extensions.parse_priorities(spec, d)
    retry = retries.parse_retry(spec, d)
    _check_protocol(spec, d)
    channels, messages = _definitions(spec, priorities, d)
    channels = routing.derive_copies(channels, d)
    exchanges, queues = routing.check_topology(list(channels.values()), d)
    routing.check_copy_queues(list(channels.values()), d)
    _check_message_types(messages, d)
    policies = _policies(channels, d)
    retries.check_channels(retry, channels.values(), exchanges, d)
    tiers = retries.derive(retry, policies, exchanges, queues, d)
    services = _services(spec, channels, (exchanges, queues), policies, d)
    proto = spec.protocol
    json_schema = collect_schemas(spec, d, skip=proto.name if proto is not None else None)
    protocol_schemas = _protocol_schemas(spec)
    check_refs(spec, d)  # last: a more specific error at the same place wins
    if d.errors:
        return None
    return Project(
        spec_dir=spec.directory.name,
        sources=tuple(sorted(spec.documents)),
        libraries=tuple(doc.name for doc in spec.libraries),
        sha256=spec.sha256,
        exchanges=tuple(sorted((*exchanges.values(), *tiers.exchanges), key=lambda e: e.name)),
        queues=tuple(sorted((*queues.values(), *tiers.queues), key=lambda q: q.name)),
        priorities=tuple(sorted(priorities.items())),
        policies=tuple(sorted((tiers.policies or policies).items())),
        messages=tuple(
            sorted(
                (
                    MessageInfo(m.name, m.message_type, m.task_type, m.schema)
                    for m in messages.values()
                ),
                key=lambda m: m.message_type,
            )
        ),
        services=services,
        json_schema=json_schema,
        protocol_schemas=protocol_schemas,
        dead_letter_exchange=_dead_letter_exchange(services),
    )


def _protocol_schemas(spec: SpecSet) -> tuple[str, ...]:
    """The schema names the protocol document defines (their models ship with spectask)."""
    proto = spec.protocol
    schemas = spec.get(spec.get(proto.root, "components"), "schemas") if proto else None
    return tuple(sorted(key for key, _ in schemas.items())) if schemas is not None else ()
