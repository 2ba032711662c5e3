# generated from spec/echoer.asyncapi.yaml by spectask — do not edit
# spec sha256: c1589044804cc869cd898520312d4012b1c0c7add9f994ce18050d4910da88d2
"""The echoer service: routes, EchoerClient, EchoerApp.

Generated from spec/echoer.asyncapi.yaml. Thin by design: the routes are constants from
the spec and every method hands them to `spectask.runtime`, where publishing, acking and
retrying live (and are tested) once.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from types import MappingProxyType
from typing import Final, TypeAlias

from pydantic import RootModel

from spectask.errors import SpectaskError
from spectask.runtime.broker import Broker
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.submission import DEFAULT_WINDOW
from spectask.runtime.topology import ReceiveRoute, SendRoute
from spectask.runtime.worker import Handler, HandlerResult, TaskContext, WorkerStats, run_worker

from . import models
from .topology import POLICIES, TOPOLOGY

SEND_DEAD_LETTER: Final = SendRoute(
    operation="sendDeadLetter",
    exchange="jobs.dead",
    routing_key="dead",
    message_type="spectask.dead_letter",
    task_type="spectask",
    model=RootModel[models.DeadBody],
    default_priority=0,
)
SEND_REPLY: Final = SendRoute(
    operation="sendReply",
    exchange="replies",
    routing_key="echo.reply",
    message_type="echo.reply",
    task_type="echo",
    model=models.EchoReply,
    default_priority=1,
)
HANDLE_ECHO: Final = ReceiveRoute(
    operation="handleEcho",
    queue="jobs.echo",
    message_type="echo.say",
    task_type="echo",
    model=models.EchoSay,
    policy=POLICIES["echo"],
)

SEND_ROUTES: Final[tuple[SendRoute, ...]] = (
    SEND_DEAD_LETTER,
    SEND_REPLY,
)
RECEIVE_ROUTES: Final[tuple[ReceiveRoute, ...]] = (HANDLE_ECHO,)


class EchoerClient:
    """The service's send operations, one typed method each (plus `prepare_*` for batches).

    `priority` is a number or a priority name from the spec; `None` means the task type's
    default. Every submit returns the task id once the broker has confirmed the message.
    """

    def __init__(self, publisher: TaskPublisher) -> None:
        self._publisher = publisher

    @classmethod
    async def open(cls, broker: Broker) -> EchoerClient:
        """Declare the spec's topology and return a client on the broker's shared publisher."""
        await broker.declare(TOPOLOGY)
        return cls(TaskPublisher(await broker.publisher(), TOPOLOGY))

    async def send_dead_letter(
        self,
        payload: RootModel[models.DeadBody],
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Dead-letter an echo request that cannot be handled."""
        return await self._publisher.submit(
            SEND_DEAD_LETTER, payload, priority=priority, task_id=task_id
        )

    def prepare_send_dead_letter(
        self,
        payload: RootModel[models.DeadBody],
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> OutgoingMessage:
        """Build the message of `send_dead_letter` without sending it (for `submit_many`)."""
        return self._publisher.build(SEND_DEAD_LETTER, payload, priority=priority, task_id=task_id)

    async def send_reply(
        self,
        payload: models.EchoReply,
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Send a message of type echo.reply."""
        return await self._publisher.submit(SEND_REPLY, payload, priority=priority, task_id=task_id)

    def prepare_send_reply(
        self,
        payload: models.EchoReply,
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> OutgoingMessage:
        """Build the message of `send_reply` without sending it (for `submit_many`)."""
        return self._publisher.build(SEND_REPLY, payload, priority=priority, task_id=task_id)

    async def submit_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        window: int = DEFAULT_WINDOW,
        on_confirmed: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Publish prepared messages (any iterable), `window` confirms in flight; their ids.

        A failure raises SubmitError with the confirmed and the unconfirmed ids.
        """
        return await self._publisher.submit_many(messages, window=window, on_confirmed=on_confirmed)

    def submit_stream(
        self, messages: Iterable[OutgoingMessage], *, window: int = DEFAULT_WINDOW
    ) -> AsyncGenerator[str, None]:
        """Publish prepared messages, yielding each id once confirmed (for batches of any size).

        A failure raises SubmitError after the last confirmed id, with the unconfirmed ones.
        """
        return self._publisher.submit_stream(messages, window=window)


EchoSayHandler: TypeAlias = Callable[
    [models.EchoSay, TaskContext], Awaitable[HandlerResult] | HandlerResult
]


class EchoerApp:
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

    def handle_echo(self, handler: EchoSayHandler) -> EchoSayHandler:
        """Echo the text back, as often as asked."""
        self._register(HANDLE_ECHO.operation, handler)
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
