"""`spectask topology check`: what the broker holds against the spec, from the best source.

The management HTTP API lists a vhost's exchanges, queues (with their arguments) and bindings
in three requests, so it can report wrong types, wrong arguments, missing bindings and queues
the spec does not name. Without it, passive declares can only say whether each exchange and
queue exists; the report says which source it used and what that source cannot see.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from spectask.queues import _get_json, management_base
from spectask.runtime.broker import Broker
from spectask.runtime.topology import Topology
from spectask.runtime.topology_diff import (
    Difference,
    LiveExchange,
    LiveQueue,
    LiveTopology,
    compare,
)

MANAGEMENT = "management"
PASSIVE = "passive"
PASSIVE_BLIND = "types, arguments, bindings and extra queues not checked"


@dataclass(frozen=True)
class TopologyReport:
    source: str
    vhost: str
    differences: list[Difference] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "vhost": self.vhost,
            "note": self.note,
            "differences": [
                {"kind": d.kind, "entity": d.entity, "detail": d.detail} for d in self.differences
            ],
        }

    def render(self) -> str:
        head = f"source: {self.source} (vhost {self.vhost!r})" + (
            f"; {self.note}" if self.note else ""
        )
        if not self.differences:
            return f"{head}\nthe broker matches the spec"
        lines = [head, *(str(d) for d in self.differences)]
        lines.append(f"{len(self.differences)} difference(s); fix: `spectask topology apply`")
        return "\n".join(lines)


def _entries(found: object) -> list[dict[str, Any]]:
    if not isinstance(found, list):
        raise ValueError("the management API answered something other than a list")
    return [entry for entry in found if isinstance(entry, dict)]


def _from_management(url: str, configured: str | None) -> tuple[str, LiveTopology]:
    base, authorization, vhost = management_base(url, configured)
    quoted = urllib.parse.quote(vhost, safe="")

    def get(what: str, columns: str) -> list[dict[str, Any]]:
        return _entries(_get_json(f"{base}/api/{what}/{quoted}?columns={columns}", authorization))

    exchanges = {
        str(e["name"]): LiveExchange(
            str(e["name"]), e.get("type"), e.get("durable"), e.get("auto_delete")
        )
        for e in get("exchanges", "name,type,durable,auto_delete")
    }
    queues = {
        str(q["name"]): LiveQueue(
            str(q["name"]),
            q.get("durable"),
            q.get("exclusive"),
            q.get("auto_delete"),
            q.get("arguments") or {},
        )
        for q in get("queues", "name,durable,exclusive,auto_delete,arguments")
    }
    bindings = frozenset(
        (str(b.get("source", "")), str(b["destination"]), str(b.get("routing_key", "")))
        for b in get("bindings", "source,destination,destination_type,routing_key")
        if b.get("destination_type") == "queue"
    )
    return vhost, LiveTopology(exchanges, queues, bindings, complete=True)


async def _from_passive(broker: Broker, topology: Topology) -> LiveTopology:
    """Exists or not, from one passive declare per exchange and queue (`Broker.missing`)."""
    missing = set(await broker.missing(topology))
    exchanges = {
        e.name: LiveExchange(e.name)
        for e in topology.exchanges
        if ("exchange", e.name) not in missing
    }
    queues = {
        q.name: LiveQueue(q.name) for q in topology.queues if ("queue", q.name) not in missing
    }
    return LiveTopology(exchanges, queues, bindings=None, complete=False)


async def check(broker: Broker, topology: Topology) -> TopologyReport:
    """Compare the broker with `topology` (the spec's, under this process's names: a
    SPECTASK_NAME_PREFIX applies); the management API first, else passive declares."""
    topology = broker.naming.topology(topology)
    arguments = broker.queue_arguments(topology)
    try:
        vhost, live = await asyncio.to_thread(
            _from_management, broker.url, broker.config.management_url
        )
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        reason = str(getattr(exc, "reason", exc) or type(exc).__name__)
        vhost = management_base(broker.url, broker.config.management_url)[2]
        note = (
            f"management API not reachable ({reason}): {PASSIVE_BLIND}; enable the "
            "rabbitmq_management plugin or set SPECTASK_MANAGEMENT_URL"
        )
        live = await _from_passive(broker, topology)
        return TopologyReport(PASSIVE, vhost, compare(topology, arguments, live), note)
    return TopologyReport(MANAGEMENT, vhost, compare(topology, arguments, live))
