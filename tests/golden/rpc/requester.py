# generated from rpc_spec/requester.asyncapi.yaml by spectask — do not edit
# spec sha256: c21cdb0608eace005e63ce2cff3aa28572cd5856826d7eadb66c9c07d896343c
# ruff: noqa: E501 - text from the spec (descriptions, patterns) stays on one line
"""The requester service: routes, RequesterClient.

Generated from rpc_spec/requester.asyncapi.yaml. Thin by design: the routes are constants from
the spec and every method hands them to `spectask.runtime`, where publishing, acking and
retrying live (and are tested) once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Final

from spectask.errors import SpectaskError
from spectask.runtime.broker import Broker
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.rpc import RpcClient
from spectask.runtime.submission import DEFAULT_WINDOW
from spectask.runtime.topology import ReceiveRoute, ReplySpec, RpcRoute, SendRoute

from . import models
from .topology import TOPOLOGY

LOOK_UP: Final = RpcRoute(
    operation="lookUp",
    exchange="rpc",
    routing_key="lookup",
    message_type="lookup.request",
    model=models.LookupRequest,
    reply=ReplySpec(message_type="lookup.reply", model=models.LookupReply),
    persistent=True,
)
PING: Final = RpcRoute(
    operation="ping",
    exchange="rpc",
    routing_key="ping",
    message_type="ping.request",
    model=models.PingRequest,
    reply=ReplySpec(message_type="ping.reply", model=models.PingReply),
    persistent=False,
)

SEND_ROUTES: Final[tuple[SendRoute, ...]] = ()
RECEIVE_ROUTES: Final[tuple[ReceiveRoute, ...]] = ()
RPC_ROUTES: Final[tuple[RpcRoute, ...]] = (
    LOOK_UP,
    PING,
)


class RequesterClient:
    """The service's send operations, one typed method each (plus `prepare_*` for batches).

    `priority` is a number or a priority name from the spec; `None` means the task type's
    default. Every submit returns the task id once the broker has confirmed the message.
    """

    def __init__(self, publisher: TaskPublisher, rpc: RpcClient | None = None) -> None:
        self._publisher = publisher
        self._rpc = rpc

    def _rpc_client(self) -> RpcClient:
        if self._rpc is None:
            raise SpectaskError(
                "this client has no RPC client; build it with rpc=broker.rpc() "
                "to call request/reply operations"
            )
        return self._rpc

    @classmethod
    async def open(cls, broker: Broker) -> RequesterClient:
        """Declare the spec's topology and return a client on the broker's shared publisher and RPC client."""
        await broker.declare(TOPOLOGY)
        return cls(TaskPublisher(await broker.publisher(), TOPOLOGY), broker.rpc())

    async def look_up(
        self,
        request: models.LookupRequest,
        *,
        timeout: float = 5.0,
    ) -> models.LookupReply:
        """Look a key up (persistent request, sent to the exchange channel). Raises RpcTimeoutError
        when no reply comes within `timeout` seconds.
        """
        reply = await self._rpc_client().call(LOOK_UP, request, timeout=timeout)
        assert isinstance(reply, models.LookupReply)
        return reply

    async def ping(
        self,
        text: str,
        count: int,
        tags: Sequence[str],
        *,
        timeout: float = 5.0,
    ) -> models.PingReply:
        """Ping the responder (transient). Raises RpcTimeoutError when no reply comes within
        `timeout` seconds.
        """
        request = {
            "text": text,
            "count": count,
            "tags": tags,
        }
        reply = await self._rpc_client().call(PING, request, timeout=timeout)
        assert isinstance(reply, models.PingReply)
        return reply

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
