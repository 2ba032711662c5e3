"""The differences between the spec's `Topology` and what a broker holds, as plain values.

The comparison is built on the `Topology` value (not on the spec's YAML), so whatever
transforms that value before the runtime declares it (a name prefix, the deployment's queue
type) is what gets compared. What the broker holds comes from `spectask.topology_check`:
the management API knows everything (types, arguments, bindings, queues the spec does not
name); passive declares only know whether an exchange or queue exists, so the fields they
cannot tell are None here and not compared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from spectask.runtime.topology import ArgumentValue, QueueSpec, Topology

MISSING = "missing"
EXTRA = "extra"
DIFFERENT = "different"
SERVER_NAMED = "amq."  # amq.gen-* reply queues and the built-in amq.* exchanges


@dataclass(frozen=True)
class Difference:
    """One way the broker differs from the spec: `missing queue 'x'`, `different ...: ...`."""

    kind: str
    entity: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.entity}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class LiveExchange:
    name: str
    type: str | None = None
    durable: bool | None = None
    auto_delete: bool | None = None


@dataclass(frozen=True)
class LiveQueue:
    name: str
    durable: bool | None = None
    exclusive: bool | None = None
    auto_delete: bool | None = None
    arguments: Mapping[str, object] | None = None


@dataclass(frozen=True)
class LiveTopology:
    """What a broker's virtual host holds; `complete` when every exchange and queue of the
    vhost is listed (management API), so queues the spec does not name can be reported."""

    exchanges: Mapping[str, LiveExchange]
    queues: Mapping[str, LiveQueue]
    bindings: frozenset[tuple[str, str, str]] | None  # (exchange, queue, routing key)
    complete: bool


def namespace(topology: Topology) -> str:
    """The prefix every spec queue shares (a name prefix, or "" for none): queues outside it
    belong to someone else sharing the vhost and are never reported as extra."""
    # character by character on purpose: names are not paths ("app1-tasks", "app1-results")
    return os.path.commonprefix([queue.name for queue in topology.queues])  # noqa: RUF071


def _flags(spec: object, live: object, names: tuple[str, ...]) -> list[str]:
    return [
        f"{name} {getattr(live, name)} (spec: {getattr(spec, name)})"
        for name in names
        if getattr(live, name) is not None and getattr(live, name) != getattr(spec, name)
    ]


def _arguments(wanted: Mapping[str, ArgumentValue], live: Mapping[str, object]) -> list[str]:
    problems = []
    for key in sorted(set(wanted) | set(live)):
        if key not in live:
            problems.append(f"argument {key} missing (spec: {wanted[key]!r})")
        elif key not in wanted:
            problems.append(f"argument {key}={live[key]!r} not in the spec")
        elif str(live[key]) != str(wanted[key]):
            problems.append(f"argument {key}={live[key]!r} (spec: {wanted[key]!r})")
    return problems


def _queue(
    spec: QueueSpec, wanted: Mapping[str, ArgumentValue], live: LiveQueue
) -> list[Difference]:
    problems = _flags(spec, live, ("durable", "exclusive", "auto_delete"))
    if live.arguments is not None:
        problems += _arguments(wanted, live.arguments)
    return [Difference(DIFFERENT, f"queue {spec.name!r}", problem) for problem in problems]


def compare(
    topology: Topology,
    arguments: Mapping[str, Mapping[str, ArgumentValue]],
    live: LiveTopology,
) -> list[Difference]:
    """Every difference, in the spec's order: exchanges, queues, bindings, then extras.

    `arguments` are the queue arguments the runtime would declare (`queue_arguments`: the
    spec's, adjusted for SPECTASK_QUEUE_TYPE and the broker's version).
    """
    found: list[Difference] = []
    for exchange in topology.exchanges:
        live_exchange = live.exchanges.get(exchange.name)
        entity = f"exchange {exchange.name!r}"
        if live_exchange is None:
            found.append(Difference(MISSING, entity, f"type {exchange.type}"))
            continue
        if live_exchange.type is not None and live_exchange.type != exchange.type:
            found.append(
                Difference(DIFFERENT, entity, f"type {live_exchange.type} (spec: {exchange.type})")
            )
        found += [
            Difference(DIFFERENT, entity, problem)
            for problem in _flags(exchange, live_exchange, ("durable", "auto_delete"))
        ]
    for queue in topology.queues:
        live_queue = live.queues.get(queue.name)
        if live_queue is None:
            found.append(Difference(MISSING, f"queue {queue.name!r}"))
            continue
        found += _queue(queue, arguments[queue.name], live_queue)
    if live.bindings is not None:
        wanted = {
            (binding.exchange, queue.name, binding.routing_key)
            for queue in topology.queues
            for binding in queue.bindings
        }
        for source, queue_name, key in sorted(wanted - live.bindings):
            if queue_name in live.queues:  # a missing queue is reported once, above
                found.append(
                    Difference(MISSING, f"binding {source} -> {queue_name}", f"key {key!r}")
                )
        spec_queues = {queue.name for queue in topology.queues}
        for source, queue_name, key in sorted(live.bindings - wanted):
            if queue_name in spec_queues and source:  # "" is the default exchange's
                found.append(Difference(EXTRA, f"binding {source} -> {queue_name}", f"key {key!r}"))
    if live.complete:
        prefix = namespace(topology)
        spec_queues = {queue.name for queue in topology.queues}
        for name, extra in sorted(live.queues.items()):
            if (
                name not in spec_queues
                and name.startswith(prefix)
                and not name.startswith(SERVER_NAMED)
                and not extra.exclusive
            ):
                found.append(Difference(EXTRA, f"queue {name!r}", "not in the spec"))
    return found
