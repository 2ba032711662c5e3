"""The intermediate representation: everything the templates need, sorted, nothing else.

Templates read only these frozen values, so what is emitted depends on the spec's meaning and
not on the order of keys in a YAML file. The topology values are the runtime's own dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectask.runtime.topology import ExchangeSpec, QueueSpec, TaskPolicy


@dataclass(frozen=True)
class MessageInfo:
    """A message: its type (what the worker dispatches on) and its payload model class."""

    name: str
    message_type: str
    task_type: str
    model: str


@dataclass(frozen=True)
class SendOp:
    """A send operation: publish `model` to `exchange` with `routing_key`."""

    operation: str
    method: str
    constant: str
    exchange: str
    routing_key: str
    message_type: str
    task_type: str
    model: str
    default_priority: int
    summary: str
    reply_model: str | None = None
    reply_message_type: str = ""
    persistent: bool = True
    # keyword parameters of a request/reply method: (name, annotation), when the request
    # schema is simple enough to spell out; None means the method takes the model itself
    request_params: tuple[tuple[str, str], ...] | None = None
    runtime: str | None = None
    # the schema of one task in a status reply (`x-spectask-runtime: status` only)
    status_view: str | None = None
    # a protocol send of a receiving service (a worker's results): the runtime publishes it,
    # so the generated client has no method for it
    runtime_only: bool = False


@dataclass(frozen=True)
class ReceiveOp:
    """A receive operation: consume `message_type` from `queue`; `policy` keys POLICIES."""

    operation: str
    method: str
    constant: str
    queue: str
    message_type: str
    task_type: str
    model: str
    policy: str | None
    summary: str
    reply_model: str | None = None
    reply_message_type: str = ""
    # `x-spectask-runtime`: the runtime handles it, so the app has no decorator for it
    runtime: str | None = None


@dataclass(frozen=True)
class Service:
    """One service document (`worker.asyncapi.yaml` -> module `worker`, class `WorkerApp`)."""

    stem: str
    source: str
    send_ops: tuple[SendOp, ...]
    receive_ops: tuple[ReceiveOp, ...]

    @property
    def class_prefix(self) -> str:
        return "".join(part.capitalize() for part in self.stem.split("_"))

    @property
    def models(self) -> tuple[str, ...]:
        """The payload model classes this service uses, sorted."""
        models = {op.model for op in self.send_ops} | {op.model for op in self.receive_ops}
        models |= {op.reply_model for op in self.send_ops if op.reply_model}
        models |= {op.reply_model for op in self.receive_ops if op.reply_model}
        models |= {op.status_view for op in self.send_ops if op.status_view}
        return tuple(sorted(models))

    @property
    def plain_send_ops(self) -> tuple[SendOp, ...]:
        """Send operations without a reply (fire and forget, confirmed)."""
        return tuple(op for op in self.send_ops if op.reply_model is None)

    @property
    def client_send_ops(self) -> tuple[SendOp, ...]:
        """Plain send operations the generated client offers (not the runtime's own)."""
        return tuple(op for op in self.plain_send_ops if not op.runtime_only)

    @property
    def has_client(self) -> bool:
        """Whether the service gets a client class (it sends something itself)."""
        return bool(self.client_send_ops or self.rpc_ops)

    @property
    def rpc_ops(self) -> tuple[SendOp, ...]:
        """Send operations that wait for a reply."""
        return tuple(op for op in self.send_ops if op.reply_model is not None)

    @property
    def status_op(self) -> SendOp | None:
        """The task status request (`x-spectask-runtime: status`), which `wait()` polls."""
        return next((op for op in self.send_ops if op.runtime == "status"), None)

    @property
    def handler_ops(self) -> tuple[ReceiveOp, ...]:
        """Receive operations that need a handler (the runtime carries out the others)."""
        return tuple(op for op in self.receive_ops if op.runtime is None)


@dataclass(frozen=True)
class Project:
    """The whole spec, ready to render."""

    spec_dir: str
    sources: tuple[str, ...]
    libraries: tuple[str, ...]
    sha256: str
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    priorities: tuple[tuple[str, int], ...]
    policies: tuple[tuple[str, TaskPolicy], ...]
    messages: tuple[MessageInfo, ...]
    services: tuple[Service, ...]
    json_schema: str
    # schemas of the protocol document: their models are spectask.protocol.models' own
    protocol_schemas: tuple[str, ...] = ()
    # the exchange the protocol's dead letters are published to (Topology.dead_letter_exchange)
    dead_letter_exchange: str = ""
