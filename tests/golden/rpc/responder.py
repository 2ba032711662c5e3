# generated from rpc_spec/responder.asyncapi.yaml by spectask — do not edit
# spec sha256: 5c867ee37c8df42fb5f3c915f243c6558e75b06fc13b26ae7841bd1520491ae7
"""The responder service: routes, ResponderApp.

Generated from rpc_spec/responder.asyncapi.yaml. Thin by design: the routes are constants from
the spec and every method hands them to `spectask.runtime`, where publishing, acking and
retrying live (and are tested) once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

from spectask.errors import SpectaskError
from spectask.runtime.broker import Broker
from spectask.runtime.topology import ReceiveRoute, ReplySpec, SendRoute
from spectask.runtime.worker import Handler, TaskContext, WorkerStats, run_worker

from . import models
from .topology import TOPOLOGY

ANSWER_LOOKUP: Final = ReceiveRoute(
    operation="answerLookup",
    queue="rpc.lookup",
    message_type="lookup.request",
    task_type="lookup",
    model=models.LookupRequest,
    reply=ReplySpec(message_type="lookup.reply", model=models.LookupReply),
)
ANSWER_PING: Final = ReceiveRoute(
    operation="answerPing",
    queue="rpc.ping",
    message_type="ping.request",
    task_type="ping",
    model=models.PingRequest,
    reply=ReplySpec(message_type="ping.reply", model=models.PingReply),
)

SEND_ROUTES: Final[tuple[SendRoute, ...]] = ()
RECEIVE_ROUTES: Final[tuple[ReceiveRoute, ...]] = (
    ANSWER_LOOKUP,
    ANSWER_PING,
)


LookupRequestHandler: TypeAlias = Callable[
    [models.LookupRequest, TaskContext], Awaitable[models.LookupReply] | models.LookupReply
]
PingRequestHandler: TypeAlias = Callable[
    [models.PingRequest, TaskContext], Awaitable[models.PingReply] | models.PingReply
]


class ResponderApp:
    """The service's receive operations: one handler each, and the loop that runs them.

    Register exactly one handler per operation with the decorator of the same (snake_case)
    name, then `await app.run(broker, worker_id=...)`; a missing handler stops the start.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The registered handlers by operation id (a read-only view)."""
        return MappingProxyType(self._handlers)

    def _register(self, operation: str, handler: Handler) -> None:
        if operation in self._handlers:
            raise SpectaskError(
                f"a handler for {operation} is already registered; "
                "register exactly one handler per operation"
            )
        self._handlers[operation] = handler

    def answer_lookup(self, handler: LookupRequestHandler) -> LookupRequestHandler:
        """Answer a lookup."""
        self._register(ANSWER_LOOKUP.operation, handler)
        return handler

    def answer_ping(self, handler: PingRequestHandler) -> PingRequestHandler:
        """Answer a ping; the handler returns the reply."""
        self._register(ANSWER_PING.operation, handler)
        return handler

    async def run(
        self,
        broker: Broker,
        *,
        worker_id: str,
        task_types: Collection[str] | None = None,
        stop: asyncio.Event | None = None,
        burst: bool = False,
    ) -> WorkerStats:
        """Declare the topology and consume until `stop` is set (with `burst`: until idle)."""
        return await run_worker(
            broker,
            topology=TOPOLOGY,
            routes=RECEIVE_ROUTES,
            handlers=self.handlers,
            send_routes=SEND_ROUTES,
            worker_id=worker_id,
            task_types=task_types,
            stop=stop,
            burst=burst,
        )
