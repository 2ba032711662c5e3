"""Exchanges and how they route: RabbitMQ's direct, fanout and topic rules, nothing more.

Topic matching follows RabbitMQ exactly: keys and patterns are dot-separated words (the empty
key has no words), `*` is exactly one word, `#` is zero or more, anything else must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from spectask.runtime.transport import PreconditionFailedError

EXCHANGE_TYPES = ("direct", "fanout", "topic")


def _words(key: str) -> tuple[str, ...]:
    return () if key == "" else tuple(key.split("."))


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding `pattern` matches `routing_key`, as RabbitMQ decides it."""
    return _match(_words(pattern), _words(routing_key))


def _match(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # zero words, or one word and `#` again
        return _match(rest, key) or (bool(key) and _match(pattern, key[1:]))
    if not key:
        return False
    return (head == "*" or head == key[0]) and _match(rest, key[1:])


@dataclass
class ExchangeState:
    """An exchange as the broker holds it: its type and its bindings (queue, key)."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    bindings: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise PreconditionFailedError(
                f"exchange {self.name!r}: type {self.type!r} is not modelled by the in-memory "
                f"broker (it knows {', '.join(EXCHANGE_TYPES)})"
            )

    def route(self, routing_key: str) -> list[str]:
        """The queues a message with `routing_key` reaches, each once, in a stable order."""
        if self.type == "fanout":
            hits = {queue for queue, _ in self.bindings}
        elif self.type == "direct":
            hits = {queue for queue, key in self.bindings if key == routing_key}
        else:
            hits = {queue for queue, key in self.bindings if topic_matches(key, routing_key)}
        return sorted(hits)
