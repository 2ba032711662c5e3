"""The broker topology and routes as plain frozen values.

Generated code builds these from the spec; the runtime declares and uses them. They carry
no behaviour and import nothing from aio-pika, so generated modules stay thin and testable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from pydantic import BaseModel

ArgumentValue = str | int | bool
DELIVERY_LIMIT = "x-delivery-limit"
DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"


@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange to declare (`type` is one of topic, direct, fanout, headers)."""

    name: str
    type: str = "topic"
    durable: bool = True
    auto_delete: bool = False


@dataclass(frozen=True)
class BindingSpec:
    """A binding of a queue to an exchange with a routing key (pattern for topic exchanges)."""

    exchange: str
    routing_key: str


@dataclass(frozen=True)
class QueueSpec:
    """A queue to declare, with its `x-` arguments and its bindings."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: tuple[tuple[str, ArgumentValue], ...] = ()
    bindings: tuple[BindingSpec, ...] = ()

    def arguments_dict(self) -> dict[str, ArgumentValue]:
        return dict(self.arguments)


@dataclass(frozen=True)
class RetryTier:
    """A delay tier: a task published to `exchange` comes back to its exchange after `delay_ms`."""

    delay_ms: int
    exchange: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts of one task (seconds), and the tiers it may use.

    `tiers` come from the spec's `x-spectask-retry` (see `spectask.runtime.retry`); a policy
    without tiers cannot retry, so its first failure is final.
    """

    max_attempts: int = 1
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.0
    tiers: tuple[RetryTier, ...] = ()


@dataclass(frozen=True)
class TaskPolicy:
    """Per task type reliability policy, from the spec's `x-spectask-policy`."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    time_limit: float = 300.0
    default_priority: int = 0
    # `sideEffects`: message types whose handlers act outside spectask (send an e-mail, charge
    # a card). A delivery of one that may repeat finished work (AMQP redelivered) is checked
    # against the task store first (`spectask.runtime.repeats`), so it does not act twice.
    side_effects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Topology:
    """Everything the spec asks the broker to hold."""

    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    priorities: tuple[tuple[str, int], ...] = ()
    # where the protocol's dead letters go: a quorum task queue dead-letters a task that hit
    # its x-delivery-limit there (the broker's own dead letter, reason `delivery_limit`)
    dead_letter_exchange: str = ""

    def priority(self, name: str) -> int:
        """The number for a priority name from the spec (`normal`, `urgent`, ...)."""
        table = dict(self.priorities)
        if name not in table:
            raise KeyError(f"unknown priority {name!r}; the spec defines {sorted(table)}")
        return table[name]


@dataclass(frozen=True)
class SendRoute:
    """Where one send operation publishes, and what it publishes."""

    operation: str
    exchange: str
    routing_key: str
    message_type: str
    task_type: str
    model: type[BaseModel]
    default_priority: int = 0


ANY_MESSAGE_SUFFIX = "*"


class RouteKind(enum.Enum):
    """What a receive route is, which decides the role that serves its queue.

    - TASK: decoded and validated, run with its time limit; its outcome is a result, a
      retry, a dead letter or a cancellation (`spectask.runtime.task`);
    - REQUEST: the same, but a success is the handler's reply to the request's `reply_to`
      (`spectask.runtime.responder`);
    - TAP: a copy queue: any message type, the body undecoded, never a dead letter
      (`spectask.runtime.tap`);
    - RUNTIME: the runtime serves it itself, with no handler (`x-spectask-runtime`).
    """

    TASK = "task"
    REQUEST = "request"
    TAP = "tap"
    RUNTIME = "runtime"


@dataclass(frozen=True)
class ReceiveRoute:
    """Where one receive operation consumes from, and how its messages decode.

    Its `kind` follows from what the spec declares (see RouteKind): `runtime` (the spec's
    `x-spectask-runtime`, e.g. `cancellations`) makes a RUNTIME route, which takes no
    handler; a `message_type` ending in `*` makes a TAP (it takes every message on its queue
    whatever its AMQP type, hands the body over undecoded — the payload model's root is the
    raw bytes — with the headers in the context, and never dead-letters); a `reply` makes a
    REQUEST; anything else is a TASK.
    """

    operation: str
    queue: str
    message_type: str
    task_type: str
    model: type[BaseModel]
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    reply: ReplySpec | None = None
    runtime: str | None = None

    @property
    def kind(self) -> RouteKind:
        if self.runtime is not None:
            return RouteKind.RUNTIME
        if self.message_type.endswith(ANY_MESSAGE_SUFFIX):
            return RouteKind.TAP
        if self.reply is not None:
            return RouteKind.REQUEST
        return RouteKind.TASK

    @property
    def is_tap(self) -> bool:
        return self.kind is RouteKind.TAP


@dataclass(frozen=True)
class ReplySpec:
    """The reply of a request/reply operation: sent to the request's `reply_to` address.

    Replies go through the default exchange with the request's correlation id; the address
    is dynamic (the spec's `reply.address.location: $message.header#/replyTo`).
    """

    message_type: str
    model: type[BaseModel]


@dataclass(frozen=True)
class RpcRoute:
    """A send operation that waits for a reply (`spectask.runtime.rpc`)."""

    operation: str
    exchange: str
    routing_key: str
    message_type: str
    model: type[BaseModel]
    reply: ReplySpec
    persistent: bool = False


NAMED_ARGUMENTS = (DEAD_LETTER_EXCHANGE,)
"""Queue arguments whose value is an exchange name, so they follow a name prefix."""


@dataclass(frozen=True)
class Naming:
    """The one transform from the spec's names to the names on the broker (SPECTASK_NAME_PREFIX).

    Two applications that share a vhost each put their own prefix before every exchange and
    queue spectask declares or uses, so neither sees the other's tasks. The spec and generated
    code keep the plain names; the runtime renames each value once, where it enters from
    generated code or the protocol (`Broker.declare`, `run_worker`, the producer, the status
    client, the queue and dlq views), with these methods, built from the process's config at
    start-up (`Broker.naming`). The empty prefix changes nothing. Routing keys, message types
    and the default exchange ("") are not names of things declared, so they stay as they are.
    """

    prefix: str = ""

    def name(self, name: str) -> str:
        return f"{self.prefix}{name}" if name and self.prefix else name

    def topology(self, topology: Topology) -> Topology:
        if not self.prefix:
            return topology
        return replace(
            topology,
            exchanges=tuple(replace(e, name=self.name(e.name)) for e in topology.exchanges),
            queues=tuple(self.queue(queue) for queue in topology.queues),
            dead_letter_exchange=self.name(topology.dead_letter_exchange),
        )

    def queue(self, queue: QueueSpec) -> QueueSpec:
        arguments = tuple(
            (key, self.name(value) if key in NAMED_ARGUMENTS and isinstance(value, str) else value)
            for key, value in queue.arguments
        )
        bindings = tuple(replace(b, exchange=self.name(b.exchange)) for b in queue.bindings)
        return replace(queue, name=self.name(queue.name), arguments=arguments, bindings=bindings)

    def policy(self, policy: TaskPolicy) -> TaskPolicy:
        tiers = tuple(replace(t, exchange=self.name(t.exchange)) for t in policy.retry.tiers)
        return replace(policy, retry=replace(policy.retry, tiers=tiers))

    def send(self, route: SendRoute) -> SendRoute:
        return replace(route, exchange=self.name(route.exchange)) if self.prefix else route

    def receive(self, route: ReceiveRoute) -> ReceiveRoute:
        if not self.prefix:
            return route
        return replace(route, queue=self.name(route.queue), policy=self.policy(route.policy))

    def rpc(self, route: RpcRoute) -> RpcRoute:
        return replace(route, exchange=self.name(route.exchange)) if self.prefix else route
