"""A connection to RabbitMQ: connect (with automatic reconnect), declare the topology.

This is the boundary where aio-pika's transport errors become spectask errors with a hint.
Declaring is also where the deployment's queue type applies (`SPECTASK_QUEUE_TYPE`): the spec
says which queues follow it, the broker's version says whether their priorities can.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import aiormq

from spectask.errors import ConfigError, StoppedBeforeConnectingError
from spectask.runtime import connect_errors, declare_errors
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.connection_watch import watch_connection
from spectask.runtime.failover import URL_SEPARATOR, split_urls
from spectask.runtime.publisher import Publisher
from spectask.runtime.rpc import RpcClient
from spectask.runtime.shutdown import within
from spectask.runtime.topology import (
    DEAD_LETTER_EXCHANGE,
    DELIVERY_LIMIT,
    ArgumentValue,
    QueueSpec,
    Topology,
)
from spectask.runtime.transport import (
    ACCESS_REFUSED,
    NOT_FOUND,
    PRECONDITION_FAILED,
    Channel,
    Connection,
    connect,
    is_memory_url,
    server_properties,
)

if TYPE_CHECKING:
    from spectask.runtime.memory.clock import Clock

QUEUE_TYPE = "x-queue-type"
MAX_PRIORITY = "x-max-priority"
DEAD_LETTER_STRATEGY = "x-dead-letter-strategy"
AT_LEAST_ONCE = "at-least-once"
OVERFLOW = "x-overflow"
REJECT_PUBLISH = "reject-publish"
QUORUM_SINCE = (3, 8)
QUORUM_PRIORITIES_SINCE = (4, 0)
Version = tuple[int, ...]

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) without passwords, for messages and logs."""
    if URL_SEPARATOR in url:
        return URL_SEPARATOR.join(redact_url(part) for part in split_urls(url))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Broker:
    """One robust connection per process; channels are opened per purpose from it."""

    def __init__(self, connection: Connection, config: RuntimeConfig) -> None:
        self.connection = connection
        self.config = config
        # every spec name this process uses goes through it (SPECTASK_NAME_PREFIX)
        self.naming = config.naming
        self._publisher: Publisher | None = None
        self._rpc: RpcClient | None = None

    @classmethod
    async def connect(
        cls,
        config: RuntimeConfig | None = None,
        *,
        name: str = "spectask",
        stop: asyncio.Event | None = None,
    ) -> Broker:
        """Connect, or raise `BrokerUnavailableError` saying where we tried and what to do.

        `AMQP_URL=memory://NAME` selects the in-memory broker NAME (`spectask.runtime.memory`).
        `stop` set while connecting (SIGTERM) ends the attempt at once with
        `StoppedBeforeConnectingError`: a connect to a host that never answers would otherwise
        hold the process for SPECTASK_CONNECT_TIMEOUT after it was told to stop.
        """
        config = config or RuntimeConfig()
        shown = redact_url(config.amqp_url)
        if not is_memory_url(config.amqp_url):
            connect_errors.check_urls(config.amqp_url, redact_url)
        connecting = asyncio.ensure_future(
            asyncio.wait_for(
                connect(config.amqp_url, heartbeat=config.heartbeat, name=name),
                timeout=config.connect_timeout,
            )
        )
        if stop is not None:
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                await within(asyncio.gather(connecting, return_exceptions=True), "connecting")
                raise StoppedBeforeConnectingError(
                    f"stopped before it connected to RabbitMQ at {shown}"
                )
        try:
            connection = await connecting
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            raise connect_errors.explain(exc, config.amqp_url, shown) from exc
        watch_connection(connection, shown, redact_url)
        return cls(connection, config)

    @classmethod
    async def in_memory(
        cls, config: RuntimeConfig | None = None, *, clock: Clock | None = None
    ) -> Broker:
        """A broker on a fresh in-memory hub (for tests); `memory.hub(broker.url)` reaches it.

        Give a `memory.FakeClock` to fire TTLs (retry delays) when the test advances it.
        """
        from spectask.runtime import memory

        hub = memory.new_hub(clock=clock)
        config = (config or RuntimeConfig()).model_copy(update={"amqp_url": hub.url})
        return await cls.connect(config)

    @property
    def url(self) -> str:
        return self.config.amqp_url

    async def channel(self, *, prefetch: int | None = None) -> Channel:
        """A new channel with publisher confirms, for consumers that also publish."""
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publisher(self) -> Publisher:
        """The process's shared confirmed publisher (one channel, many confirms in flight)."""
        if self._publisher is None:
            self._publisher = Publisher(
                await self.channel(),
                self.config.confirm_timeout,
                naming=self.naming,
                reopen=self.channel,
            )
        return self._publisher

    def rpc(self) -> RpcClient:
        """The process's request/reply client: one direct reply-to consumer, shared."""
        if self._rpc is None:
            self._rpc = RpcClient(self.connection, naming=self.naming)
        return self._rpc

    def server_version(self) -> Version | None:
        """The broker's version from the connection's server properties (None if unknown)."""
        properties: Mapping[str, object] = server_properties(self.connection)
        return parse_version(properties.get("version"))

    def queue_arguments(self, named: Topology) -> dict[str, dict[str, ArgumentValue]]:
        """Each queue's arguments as this process declares them (`queue_arguments`); `named`
        is a topology already under this process's names (`self.naming.topology`)."""
        version = self.server_version()
        return {
            spec.name: queue_arguments(
                spec,
                self.config.queue_type,
                version,
                without_priorities=self.config.quorum_without_priorities,
                dead_letter_exchange=named.dead_letter_exchange,
            )
            for spec in named.queues
        }

    async def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding; idempotent, so every process may call it.

        With SPECTASK_TOPOLOGY=check it declares nothing and only checks, passively, that the
        exchanges and queues exist (`check_declared`), so a process needs no configure
        permission once an operator has run `spectask topology apply`.

        Queue arguments are settled first (`queue_arguments`), so a configuration the broker
        cannot honour fails with a `ConfigError` before anything is declared. `topology` is the
        spec's; it is declared under this process's names (`self.naming`).
        """
        topology = self.naming.topology(topology)
        version = self.server_version()
        arguments = self.queue_arguments(topology)
        dropped = [
            spec.name
            for spec in topology.queues
            if MAX_PRIORITY in spec.arguments_dict()
            and arguments[spec.name].get(QUEUE_TYPE) == "quorum"
            and version is not None
            and version < QUORUM_PRIORITIES_SINCE
        ]
        if dropped:
            log.warning(
                "%s: quorum queues without priorities (SPECTASK_QUORUM_WITHOUT_PRIORITIES): "
                "RabbitMQ %s ignores message priorities on quorum queues",
                ", ".join(dropped),
                ".".join(str(part) for part in version or ()),
            )
        quorum_with_priorities = [
            spec.name
            for spec in topology.queues
            if MAX_PRIORITY in spec.arguments_dict()
            and arguments[spec.name].get(QUEUE_TYPE) == "quorum"
        ]
        if quorum_with_priorities and topology.priorities and not dropped:
            log.warning(
                "%s: %s",
                ", ".join(quorum_with_priorities),
                quorum_priority_note(topology.priorities),
            )
        if self.config.topology == "check":
            await self.check_declared(topology)
            return
        await self._declare(topology, arguments)

    async def _declare(
        self, topology: Topology, arguments: Mapping[str, dict[str, ArgumentValue]]
    ) -> None:
        """Declare actively; a refusal (other settings, no configure permission) is one line."""
        channel = await self.connection.channel()
        try:
            for spec in topology.exchanges:
                try:
                    await channel.declare_exchange(
                        spec.name,
                        type=spec.type,
                        durable=spec.durable,
                        auto_delete=spec.auto_delete,
                    )
                except PRECONDITION_FAILED as exc:
                    raise declare_errors.refused(
                        "exchange", spec.name, f"type {spec.type!r}", exc
                    ) from None
                except ACCESS_REFUSED:
                    raise self._not_allowed("exchange", spec.name) from None
            for queue_spec in topology.queues:
                try:
                    queue = await channel.declare_queue(
                        queue_spec.name,
                        durable=queue_spec.durable,
                        exclusive=queue_spec.exclusive,
                        auto_delete=queue_spec.auto_delete,
                        arguments=arguments[queue_spec.name],
                    )
                except PRECONDITION_FAILED as exc:
                    raise declare_errors.refused(
                        "queue",
                        queue_spec.name,
                        f"arguments {arguments[queue_spec.name]}",
                        exc,
                    ) from None
                except ACCESS_REFUSED:
                    raise self._not_allowed("queue", queue_spec.name) from None
                except aiormq.exceptions.ConnectionInternalError as exc:
                    raise declare_errors.failed(queue_spec.name, exc) from None
                except NOT_FOUND as exc:
                    error = declare_errors.unavailable(queue_spec.name, exc)
                    if error is None:
                        raise
                    raise error from None
                for binding in queue_spec.bindings:
                    try:
                        await queue.bind(binding.exchange, routing_key=binding.routing_key)
                    except ACCESS_REFUSED:
                        raise self._not_allowed("binding to", queue_spec.name) from None
        finally:
            await within(channel.close(), "closing the declaring channel")

    async def check_declared(self, topology: Topology) -> None:
        """SPECTASK_TOPOLOGY=check: passive declares only (no configure permission needed);
        every missing exchange or queue is named in one `ConfigError`."""
        missing = [f"{kind} {name!r}" for kind, name in await self.missing(topology)]
        if missing:
            raise declare_errors.missing(missing, connect_errors.vhost_of(self._first_url()))

    async def missing(self, named: Topology) -> list[tuple[str, str]]:
        """(`exchange`|`queue`, name) of each one the broker lacks, by passive declares;
        `named` is under this process's names already (`self.naming.topology`)."""
        topology = named
        found: list[tuple[str, str]] = []
        entities = [("exchange", spec.name) for spec in topology.exchanges] + [
            ("queue", spec.name) for spec in topology.queues
        ]
        channel = await self.connection.channel()
        try:
            for kind, name in entities:
                try:
                    if kind == "exchange":
                        await channel.declare_exchange(name, passive=True)
                    else:
                        await channel.declare_queue(name, passive=True)
                except NOT_FOUND:
                    found.append((kind, name))
                    channel = await self.connection.channel()  # a 404 closed the old one
        finally:
            await within(channel.close(), "closing the checking channel")
        return found

    def _first_url(self) -> str:
        return (split_urls(self.config.amqp_url) or [self.config.amqp_url])[0]

    def _not_allowed(self, kind: str, name: str) -> ConfigError:
        url = urlsplit(self._first_url())
        user = unquote(url.username) if url.username else "guest"
        return declare_errors.not_allowed(kind, name, user, connect_errors.vhost_of(url.geturl()))

    async def close(self) -> None:
        """Close the connection; bounded, since over a lost connection closing can wait forever."""
        if self._rpc is not None:
            await within(self._rpc.close(), "closing the status client")
        await within(self.connection.close(), "closing the connection")

    async def __aenter__(self) -> Broker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def parse_version(value: object) -> Version | None:
    """`(3, 10, 8)` from a server's "3.10.8" (bytes or str; suffixes like "-rc.1" ignored)."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", value.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.groups(default="0"))


def queue_arguments(
    queue: QueueSpec,
    queue_type: str,
    server_version: Version | None,
    *,
    without_priorities: bool = False,
    dead_letter_exchange: str = "",
) -> dict[str, ArgumentValue]:
    """The arguments to declare a queue with, for the deployment's queue type and broker.

    The spec marks the queues whose type the deployment chooses by giving them
    `x-queue-type: classic`; with `queue_type="quorum"` those become quorum queues (replicated
    across a cluster). `x-delivery-limit` only means something to quorum queues (classic ones
    reject it), so classic queues are declared without it. Before RabbitMQ 4.0 a quorum queue
    rejects `x-max-priority` and ignores priorities: refuse that here, saying what to do,
    rather than letting the broker fail the declare with PRECONDITION_FAILED. From 4.0 quorum
    queues honour priorities without being asked (two levels, see `quorum_priority_note`) and
    still refuse the `x-max-priority` argument, so it is left out. `without_priorities`
    (SPECTASK_QUORUM_WITHOUT_PRIORITIES) is the user's explicit choice of replication over
    priorities on an older broker: the argument is left out there too (`declare` warns).
    A quorum queue with a delivery limit dead-letters to `dead_letter_exchange` (the
    protocol's), so a task that hit the limit is kept with reason `delivery_limit`, not dropped.
    """
    arguments = queue.arguments_dict()
    if queue_type == "quorum" and arguments.get(QUEUE_TYPE) == "classic":
        if queue.exclusive or queue.auto_delete or not queue.durable:
            raise ConfigError(
                f"SPECTASK_QUEUE_TYPE=quorum: queue {queue.name!r} cannot be a quorum queue, "
                "which must be durable, not exclusive and not auto-delete; fix the queue in the "
                "spec or use SPECTASK_QUEUE_TYPE=classic"
            )
        arguments[QUEUE_TYPE] = "quorum"
    if arguments.get(QUEUE_TYPE, "classic") == "classic":
        arguments.pop(DELIVERY_LIMIT, None)
        return arguments
    if arguments[QUEUE_TYPE] == "quorum" and DELIVERY_LIMIT in arguments and dead_letter_exchange:
        arguments.setdefault(DEAD_LETTER_EXCHANGE, dead_letter_exchange)
    if arguments[QUEUE_TYPE] == "quorum" and DEAD_LETTER_EXCHANGE in arguments:
        # A retry tier: RabbitMQ dead-letters at-most-once (a node failing between the expiry
        # and the republish loses the task) unless the quorum queue asks for at-least-once,
        # which in turn needs reject-publish overflow (3.10+).
        arguments.setdefault(DEAD_LETTER_STRATEGY, AT_LEAST_ONCE)
        arguments.setdefault(OVERFLOW, REJECT_PUBLISH)
    if arguments[QUEUE_TYPE] != "quorum" or server_version is None:
        return arguments
    shown = ".".join(str(part) for part in server_version)
    if server_version < QUORUM_SINCE:
        raise ConfigError(
            f"queue {queue.name!r} is a quorum queue, but RabbitMQ {shown} has no quorum queues "
            "(they came in 3.8); use SPECTASK_QUEUE_TYPE=classic or upgrade RabbitMQ"
        )
    if MAX_PRIORITY in arguments and server_version < QUORUM_PRIORITIES_SINCE:
        if without_priorities:
            arguments.pop(MAX_PRIORITY)
            return arguments
        raise ConfigError(
            f"queue {queue.name!r} would be a quorum queue with priorities "
            f"({MAX_PRIORITY}: {arguments[MAX_PRIORITY]} in the spec), but RabbitMQ {shown} "
            "does not support priorities on quorum queues: before 4.0 it rejects "
            f"{MAX_PRIORITY} (PRECONDITION_FAILED) and ignores message priorities."
            "\n  hint: use classic queues (SPECTASK_QUEUE_TYPE=classic, the default), or "
            "RabbitMQ >= 4.0, whose quorum queues support priorities (two levels: 0-4 and 5+)"
        )
    arguments.pop(MAX_PRIORITY, None)
    return arguments


def quorum_priority_note(priorities: Sequence[tuple[str, int]]) -> str:
    """How the spec's priority names fare on quorum queues of RabbitMQ 4.x (for a warning).

    Those queues have two levels: 0-4 is normal, 5 and above is high, and they deliver two high
    messages per normal one (when both wait) rather than strictly high first.
    """
    normal = [name for name, number in sorted(priorities, key=lambda p: p[1]) if number <= 4]
    high = [name for name, number in sorted(priorities, key=lambda p: p[1]) if number > 4]
    return (
        "quorum queues have two priority levels, served 2:1 rather than strictly: "
        f"normal (0-4): {', '.join(normal) or '-'}; high (5+): {', '.join(high) or '-'}; "
        "names in the same level are not told apart (give x-spectask-priorities numbers on "
        "both sides of 4, or use classic queues, to keep the order you need)"
    )
