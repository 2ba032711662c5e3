"""Our `x-spectask-*` extensions: strict, because nobody else checks them.

AsyncAPI tools ignore `x-` keys, so a typo (`maxAttempt`) would silently become a default. An
unknown `x-spectask-*` key anywhere outside a schema is an error, and so is a bad value in the
priorities or in a task policy. (`x-spectask-retry`, the retry tiers, is read in `retries`.)
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any

from spectask.codegen.diagnostics import Diagnostics, JsonPath
from spectask.codegen.fields import Rule, check_fields, is_int, is_number
from spectask.codegen.load import SpecSet
from spectask.codegen.nodes import Node
from spectask.runtime.topology import RetryPolicy, TaskPolicy

PREFIX = "x-spectask-"
PRIORITIES = "x-spectask-priorities"
RETRY = "x-spectask-retry"
PROTOCOL = "x-spectask-protocol"
ROLES = "x-spectask-roles"
COPIES = "x-spectask-copies"
ROOT_KEYS = (PRIORITIES, RETRY, PROTOCOL)
CHANNEL_KEYS = ("x-spectask-bindings", "x-spectask-arguments", "x-spectask-policy", COPIES)
# Keys whose values are JSON Schemas: property names there (`x-spectask-attempt`) are data.
_SCHEMA_KEYS = frozenset({"schemas", "payload", "headers"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
OPERATION_KEYS = ("x-spectask-runtime", ROLES)
# A message's result schema ({$ref: ...}): what its handler returns, for clients to read.
MESSAGE_KEYS = ("x-spectask-result",)
_KNOWN_HINT = (
    f"spectask knows {', '.join(ROOT_KEYS)} (document root), {', '.join(CHANNEL_KEYS)} "
    f"(in a queue channel's bindings.amqp), {', '.join(OPERATION_KEYS)} (in an operation) "
    f"and {', '.join(MESSAGE_KEYS)} (in components.messages)"
)


def _allowed(path: JsonPath) -> bool:
    if len(path) == 1 and path[0] in ROOT_KEYS:
        return True
    if len(path) == 3 and path[0] == "operations" and path[2] in OPERATION_KEYS:
        return True
    if len(path) == 4 and path[:2] == ("components", "messages") and path[3] in MESSAGE_KEYS:
        return True
    return (
        len(path) == 5
        and path[0] == "channels"
        and path[2:4] == ("bindings", "amqp")
        and path[4] in CHANNEL_KEYS
    )


def scan_unknown(spec: SpecSet, d: Diagnostics) -> None:
    """Report `x-spectask-*` keys that are misspelled or in a place that does not read them."""

    def walk(node: Node) -> None:
        for key, child in node.items():
            if key.startswith(PREFIX) and not _allowed(child.path):
                d.error(child, f"unknown or misplaced extension {key!r}", _KNOWN_HINT)
            elif key not in _SCHEMA_KEYS and not _allowed(child.path):
                walk(child)
        for child in node.elements():
            walk(child)

    for name in sorted(spec.documents):
        walk(spec.documents[name].root)


def parse_priorities(spec: SpecSet, d: Diagnostics) -> dict[str, int]:
    """`x-spectask-priorities` (names -> AMQP priorities 0..255), from the one document with it."""
    found = [doc.root.child(PRIORITIES) for doc in spec.documents.values()]
    nodes = sorted((n for n in found if n is not None), key=lambda n: n.file)
    for extra in nodes[1:]:
        d.error(extra, f"{PRIORITIES} is also defined in {nodes[0].file}", "define it once")
    if not nodes:
        return {}
    table: dict[str, int] = {}
    if not isinstance(nodes[0].value, dict):
        d.error(nodes[0], "must map priority names to numbers", "for example high: 8")
        return table
    for name, child in nodes[0].items():
        if not _NAME.match(name) or keyword.iskeyword(name):
            d.error(
                child,
                f"priority name {name!r} is not a lower_snake_case name",
                "it becomes a member of the Priority enum; use e.g. high",
            )
        elif not is_int(child.value) or not 0 <= child.value <= 255:
            d.error(
                child,
                f"priority {name!r} must be an integer in 0..255",
                "AMQP priorities are one octet; for example high: 8",
            )
        else:
            table[name] = child.value
    return table


def _seconds(value: Any) -> bool:
    return is_number(value) and value >= 0


BACKOFF = {
    "initial": Rule(_seconds, "seconds >= 0", "1.0"),
    "multiplier": Rule(lambda v: is_number(v) and v >= 1, "a number >= 1", "2.0"),
    "max": Rule(_seconds, "seconds >= 0", "60.0"),
    "jitter": Rule(lambda v: is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]", "0.1"),
}
POLICY = {
    "maxAttempts": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1", "3"),
    "backoff": Rule(lambda v: isinstance(v, dict), "a mapping", "{initial: 1.0, max: 60.0}"),
    "timeLimit": Rule(lambda v: is_number(v) and v > 0, "seconds > 0", "60"),
    "defaultPriority": Rule(lambda v: isinstance(v, str), "a priority name", "normal"),
    "sideEffects": Rule(
        lambda v: isinstance(v, list) and all(isinstance(t, str) and t for t in v),
        "a list of this channel's message types",
        "[report_generation.email]",
    ),
    "deliveryLimit": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1", "10"),
}


def parse_policy(node: Node, priorities: Mapping[str, int], d: Diagnostics) -> TaskPolicy:
    """`x-spectask-policy`; what the spec leaves out keeps the runtime's defaults."""
    values = check_fields(node, POLICY, d)
    backoff_node = node.child("backoff")
    backoff = {}
    if "backoff" in values and backoff_node is not None:
        backoff = check_fields(backoff_node, BACKOFF, d)
    retry, policy = RetryPolicy(), TaskPolicy()
    retry = RetryPolicy(
        max_attempts=values.get("maxAttempts", retry.max_attempts),
        initial_delay=float(backoff.get("initial", retry.initial_delay)),
        multiplier=float(backoff.get("multiplier", retry.multiplier)),
        max_delay=float(backoff.get("max", retry.max_delay)),
        jitter=float(backoff.get("jitter", retry.jitter)),
    )
    if backoff_node is not None and retry.max_delay < retry.initial_delay:
        d.error(
            backoff_node,
            f"backoff max ({retry.max_delay}) is below initial ({retry.initial_delay})",
            "max caps the growing delay; make it at least initial",
        )
    default_priority = policy.default_priority
    name = values.get("defaultPriority")
    where = node.child("defaultPriority")
    if name is not None and where is not None and name not in priorities:
        known = ", ".join(sorted(priorities)) or "(none)"
        d.error(where, f"unknown priority {name!r}", f"{PRIORITIES} defines: {known}")
    elif name is not None:
        default_priority = priorities[name]
    return TaskPolicy(
        retry=retry,
        time_limit=float(values.get("timeLimit", policy.time_limit)),
        default_priority=default_priority,
        side_effects=frozenset(values.get("sideEffects", ())),
    )
