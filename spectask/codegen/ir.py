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
        return tuple(sorted(models))


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
