"""How full each queue of the spec is: from the management HTTP API, else passive declares.

The management API answers every queue of a vhost in one request, with unacked counts and
message rates; the AMQP protocol itself only tells a queue's ready count and consumers (a
passive `queue.declare`), one queue at a time. So the views (`spectask queues`, the
dashboard) ask the API when it is reachable and say which source they used. One request for
the whole vhost, filtered here to the spec's queues, keeps a broker with many queues cheap
(Flower's broker tab times out there, asking per queue).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiormq

from spectask.runtime.broker import Broker
from spectask.runtime.failover import split_urls
from spectask.runtime.topology import QueueSpec, Topology
from spectask.runtime.transport import NOT_FOUND
from spectask.tables import format_table

log = logging.getLogger(__name__)

MANAGEMENT = "management"
PASSIVE = "passive"
MANAGEMENT_PORT = 15672
HTTP_TIMEOUT = 2.0
RETRY_MANAGEMENT_AFTER = 60.0  # seconds before an unreachable API is tried again
COLUMNS = (
    "name,messages_ready,messages_unacknowledged,consumers,"
    "message_stats.publish_details.rate,message_stats.deliver_get_details.rate,"
    "message_stats.ack_details.rate"
)


@dataclass(frozen=True)
class QueueDepth:
    """One queue as the broker sees it; None where the source cannot tell."""

    name: str
    kind: str
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None
    deliver_rate: float | None = None
    ack_rate: float | None = None
    missing: bool = False


@dataclass(frozen=True)
class QueueReport:
    """The spec's queues and where their numbers came from (`management` or `passive`)."""

    source: str
    queues: list[QueueDepth] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "note": self.note,
            "queues": [asdict(q) for q in self.queues],
        }


def queue_kind(queue: QueueSpec) -> str:
    """stream, delay (a retry tier: messages wait out their TTL there) or queue."""
    arguments = queue.arguments_dict()
    if arguments.get("x-queue-type") == "stream":
        return "stream"
    if "x-message-ttl" in arguments:
        return "delay"
    return "queue"


def management_base(amqp_url: str, configured: str | None) -> tuple[str, str | None, str]:
    """(base URL without credentials, Authorization header, vhost) of the management API."""
    # Several URLs (a cluster): the management API of the first node.
    amqp = urllib.parse.urlsplit((split_urls(amqp_url) or [amqp_url])[0])
    vhost = urllib.parse.unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    source = urllib.parse.urlsplit(configured) if configured else None
    if source is not None:
        user, password, host = source.username, source.password, source.hostname
        port, scheme = source.port, source.scheme or "http"
    else:
        user, password, host = amqp.username or "guest", amqp.password or "guest", amqp.hostname
        port, scheme = MANAGEMENT_PORT, "https" if amqp.scheme == "amqps" else "http"
    if user is None:
        user, password = amqp.username or "guest", amqp.password or "guest"
    netloc = f"{host or 'localhost'}" + (f":{port}" if port else "")
    token = base64.b64encode(
        f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password or '')}".encode()
    ).decode()
    return f"{scheme}://{netloc}", f"Basic {token}", vhost


def _get_json(url: str, authorization: str | None) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if authorization:
        request.add_header("Authorization", authorization)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return json.loads(response.read())


def _rate(entry: dict[str, Any], name: str) -> float | None:
    stats = entry.get("message_stats") or {}
    details = stats.get(f"{name}_details") or {}
    rate = details.get("rate")
    return float(rate) if isinstance(rate, int | float) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


class QueueSource:
    """Reads the spec's queues; remembers an unreachable management API for a minute."""

    def __init__(self, broker: Broker, topology: Topology) -> None:
        self._broker = broker
        order = {"queue": 0, "stream": 1, "delay": 2}  # the work first, retry tiers last
        queues = broker.naming.topology(topology).queues  # as declared on this broker
        self._queues = sorted(queues, key=lambda q: (order[queue_kind(q)], q.name))
        self._configured = broker.config.management_url
        self._api_down_until = 0.0
        self._api_error: str | None = None

    @property
    def names(self) -> list[str]:
        return [q.name for q in self._queues]

    async def report(self) -> QueueReport:
        if time.monotonic() >= self._api_down_until:
            try:
                return await self._from_management()
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self._api_down_until = time.monotonic() + RETRY_MANAGEMENT_AFTER
                self._api_error = str(getattr(exc, "reason", exc) or type(exc).__name__)
                if self._configured:
                    log.warning(
                        "the management API (SPECTASK_MANAGEMENT_URL) did not answer: %s; "
                        "using passive declarations (ready and consumers only)",
                        self._api_error,
                    )
        note = (
            f"management API not reachable ({self._api_error}); enable the rabbitmq_management "
            "plugin or set SPECTASK_MANAGEMENT_URL for unacked counts and rates"
        )
        return QueueReport(PASSIVE, await self._from_passive(), note)

    async def _from_management(self) -> QueueReport:
        base, authorization, vhost = management_base(self._broker.url, self._configured)
        url = f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}?columns={COLUMNS}"
        found = await asyncio.to_thread(_get_json, url, authorization)
        if not isinstance(found, list):
            raise ValueError("the management API answered something other than a list")
        by_name = {entry.get("name"): entry for entry in found if isinstance(entry, dict)}
        depths = []
        for queue in self._queues:
            entry = by_name.get(queue.name)
            if entry is None:
                depths.append(QueueDepth(queue.name, queue_kind(queue), missing=True))
                continue
            depths.append(
                QueueDepth(
                    queue.name,
                    queue_kind(queue),
                    ready=_int(entry.get("messages_ready")),
                    unacked=_int(entry.get("messages_unacknowledged")),
                    consumers=_int(entry.get("consumers")),
                    publish_rate=_rate(entry, "publish"),
                    deliver_rate=_rate(entry, "deliver_get"),
                    ack_rate=_rate(entry, "ack"),
                )
            )
        return QueueReport(MANAGEMENT, depths)

    async def _from_passive(self) -> list[QueueDepth]:
        """One passive declare per queue; a missing queue closes the channel, so reopen it."""
        depths: list[QueueDepth] = []
        channel = await self._broker.connection.channel()
        try:
            for queue in self._queues:
                try:
                    declared = await channel.declare_queue(queue.name, passive=True)
                except NOT_FOUND:
                    depths.append(QueueDepth(queue.name, queue_kind(queue), missing=True))
                    channel = await self._broker.connection.channel()
                    continue
                result = declared.declaration_result
                depths.append(
                    QueueDepth(
                        queue.name,
                        queue_kind(queue),
                        ready=int(result.message_count or 0),
                        consumers=int(result.consumer_count or 0),
                    )
                )
        finally:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await channel.close()
        return depths


def render(report: QueueReport, names: Sequence[str] | None = None) -> str:
    """The report as a table for people, with its source on the first line."""
    lines = [f"source: {report.source}" + (f" ({report.note})" if report.note else "")]
    rows = [("QUEUE", "KIND", "READY", "UNACKED", "CONSUMERS", "IN/s", "OUT/s")]

    def cell(value: float | int | None, rate: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.1f}" if rate else str(value)

    for q in report.queues:
        if names and q.name not in names:
            continue
        if q.missing:
            rows.append((q.name, q.kind, "missing", "", "", "", ""))
            continue
        rows.append(
            (
                q.name,
                q.kind,
                cell(q.ready),
                cell(q.unacked),
                cell(q.consumers),
                cell(q.publish_rate, True),
                cell(q.deliver_rate, True),
            )
        )
    return "\n".join([*lines, format_table(rows)])
