"""Checking the mappings of our extensions key by key, with a hint that shows a valid value.

YAML gives us plain dicts; each known key has a rule (a predicate, what it must be, an example),
and a key without a rule is a typo until proven otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.nodes import Node


class Rule(NamedTuple):
    """What a value must be: `check` decides, `expected` and `example` explain."""

    check: Callable[[Any], bool]
    expected: str
    example: str


def is_int(value: object) -> bool:
    """An integer, but not a bool (YAML `true` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """int or float, but not bool (YAML `true` is not a number of seconds)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_fields(node: Node, rules: Mapping[str, Rule], d: Diagnostics) -> dict[str, Any]:
    """The valid values of a mapping with known keys; reports unknown keys and bad values."""
    if not isinstance(node.value, dict):
        d.error(node, "must be a mapping", f"known keys: {', '.join(rules)}")
        return {}
    values: dict[str, Any] = {}
    for key, child in node.items():
        rule = rules.get(key)
        if rule is None:
            d.error(child, f"unknown key {key!r}", f"known keys: {', '.join(rules)}")
        elif not rule.check(child.value):
            d.error(child, f"{key} must be {rule.expected}", f"for example {key}: {rule.example}")
        else:
            values[key] = child.value
    return values


def flag(node: Node, key: str, default: bool, d: Diagnostics) -> bool:
    """A true/false setting of `node` (`durable`, `autoDelete`, ...), `default` if absent."""
    child = node.child(key)
    if child is None:
        return default
    if not isinstance(child.value, bool):
        d.error(child, f"{key} must be true or false", f"for example {key}: {str(default).lower()}")
        return default
    return child.value
