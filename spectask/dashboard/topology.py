"""The spec's topology as JSON for the page's diagram: who routes what to where.

Edges are the bindings (exchange -> queue, with the binding key) and the dead-letter hops
that queue arguments declare (a retry tier's `x-dead-letter-exchange` takes a task back to
its exchange when its TTL ends). The page lays them out; this only states them.
"""

from __future__ import annotations

from typing import Any

from spectask.queues import queue_kind
from spectask.runtime.topology import Topology

DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"
MESSAGE_TTL = "x-message-ttl"


def topology_json(topology: Topology) -> dict[str, Any]:
    exchanges = [{"name": e.name, "type": e.type} for e in topology.exchanges]
    queues = []
    edges: list[dict[str, Any]] = []
    for queue in topology.queues:
        arguments = queue.arguments_dict()
        queues.append(
            {
                "name": queue.name,
                "kind": queue_kind(queue),
                "arguments": arguments,
                "ttl_ms": arguments.get(MESSAGE_TTL),
            }
        )
        edges.extend(
            {
                "from": binding.exchange,
                "to": queue.name,
                "key": binding.routing_key,
                "kind": "binds",
            }
            for binding in queue.bindings
        )
        if DEAD_LETTER_EXCHANGE in arguments:
            edges.append(
                {
                    "from": queue.name,
                    "to": str(arguments[DEAD_LETTER_EXCHANGE]),
                    "key": "(TTL expired)" if MESSAGE_TTL in arguments else "(dead-lettered)",
                    "kind": "dead_letters",
                }
            )
    return {"exchanges": exchanges, "queues": queues, "edges": edges}
