"""Confirmed, persistent, mandatory publishing: a publish returns only once the broker has it.

An unroutable message raises `UnroutableError` (mandatory + on_return_raises) instead of being
dropped; a nack or a lost connection raises `PublishError`. Batches: `spectask.runtime.submission`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aiormq import spec

from spectask.errors import PublishError, UnroutableError
from spectask.runtime.topology import Naming, ResultMode
from spectask.runtime.transport import UNROUTABLE, Channel, RawChannel

Properties = spec.Basic.Properties
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
NOT_PERSISTENT = int(aio_pika.DeliveryMode.NOT_PERSISTENT)
# `Publisher.renew`: at most one new channel in this many seconds
RENEW_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready to publish; the body is already-serialized bytes."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    message_type: str
    priority: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: datetime | None = None
    content_type: str = "application/json"
    # A reply to a caller that may be gone: transient, and not returned when unroutable.
    reply: bool = False
    # How the delivery loop sends a task's result (`x-spectask-results`): CONFIRMED on its
    # own, BATCHED in a ResultBatch (`spectask.runtime.batching`), NONE transient and
    # unconfirmed. Every other hop is CONFIRMED.
    result_mode: ResultMode = ResultMode.CONFIRMED


def not_confirmed(message: OutgoingMessage, why: str) -> PublishError:
    """A publish the broker neither confirmed nor refused, and what to do about it."""
    return PublishError(
        f"RabbitMQ did not confirm message {message.message_id} ({why}), so it may not be "
        "stored: on a cluster, a quorum queue confirms nothing while a majority of its nodes is "
        "down; publish it again once they are back (the task id makes a duplicate harmless)"
    )


class Publisher:
    """Publishes on one confirm channel; safe to share between tasks of one event loop."""

    def __init__(
        self,
        channel: Channel,
        confirm_timeout: float | None = None,
        *,
        naming: Naming | None = None,
        confirmed: bool = True,
        reopen: Callable[[], Awaitable[Channel]] | None = None,
    ) -> None:
        self._channel = channel
        # How `renew` opens a fresh channel (None: this publisher cannot renew its channel).
        self._reopen = reopen
        self._renewed_at = -math.inf
        self._renewing = asyncio.Lock()
        # the process's names: the producer (`TaskPublisher`) names the spec's routes with it;
        # messages given here are published to exactly the exchange they name
        self.naming = naming or Naming()
        # None: wait as long as the connection lives. A quorum queue that lost the majority of
        # its nodes neither confirms nor refuses: without a bound, a submit would hang forever.
        self._confirm_timeout = confirm_timeout if confirmed else None
        # False: a channel without publisher confirms (result mode `none`): a publish returns
        # once its frames are written, transient and not mandatory (nobody hears a return).
        self._confirmed = confirmed
        self._raw: RawChannel | None = None

    async def renew(self) -> bool:
        """Publish on a fresh channel from now on; False if this publisher cannot, or did
        within the last RENEW_SECONDS (many held deliveries ask at once: one renewal serves all).

        Why: after a quorum queue's leader was killed (RabbitMQ 3.10), one channel opened in the
        reconnect can go on nacking every publish for minutes while other channels on the same
        node publish fine (tests/test_cluster.py saw 60-180 s of it). The old channel is
        closed: a publish still waiting on it fails as not confirmed, and its caller retries.
        """
        if self._reopen is None:
            return False
        async with self._renewing:
            now = time.monotonic()
            if now - self._renewed_at < RENEW_SECONDS:
                return False
            self._renewed_at = now
            old = self._channel
            self._channel = await asyncio.wait_for(self._reopen(), self._confirm_timeout)
            self._raw = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), RENEW_SECONDS)
        return True

    async def _raw_channel(self) -> RawChannel:
        """The channel under aio-pika's robust one, looked up again only once it has closed
        (a reconnect opens a new one; waiting for it counts against the confirm timeout)."""
        raw = self._raw
        if raw is None or raw.is_closed:
            raw = self._raw = await asyncio.wait_for(
                self._channel.get_underlay_channel(), self._confirm_timeout
            )
        return raw

    async def publish(self, message: OutgoingMessage) -> None:
        """Publish and wait for the broker's confirm.

        Straight on the channel under aio-pika's (aiormq's `basic_publish`, which keeps the
        confirm, `mandatory` and the return as an error): building an `aio_pika.Message` per
        publish cost ~25 us, its properties alone ~2. Only the properties a message has are
        sent (no priority 0, no empty headers table): fewer bytes for every reader to decode.
        The publish never waits for its frames to be written (aiormq's `wait`: a second future
        per publish, and the writer drains the socket after each one while the channel's lock
        is held). On a confirm channel the confirm comes after the write anyway. Without
        confirms (result mode `none`) the wait bought only the knowledge that the bytes
        reached the kernel, and cost one loop turn per publish, so the acks behind the
        results could not go out together. The frames still leave in order: one writer
        queue per connection, so a result is on the wire before the ack sent after it, and
        the consumer's prefetch bounds how many can queue (their acks queue behind them).
        """
        durable = self._confirmed and not message.reply
        properties = Properties(
            content_type=message.content_type,
            delivery_mode=PERSISTENT if durable else NOT_PERSISTENT,
            message_id=message.message_id,
            message_type=message.message_type,
            priority=message.priority or None,
            headers=dict(message.headers) if message.headers else None,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            timestamp=message.timestamp,
        )
        try:
            raw = self._raw  # the open channel without a coroutine per publish
            if raw is None or raw.is_closed:
                raw = await self._raw_channel()
            # `wait` is in aiormq's Channel (>= 7.2.4), not in its abstract class
            basic_publish: Callable[..., Awaitable[object]] = raw.basic_publish
            await basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=properties,
                mandatory=durable,
                timeout=self._confirm_timeout,
                wait=False,
            )
        except TimeoutError:
            raise not_confirmed(
                message, f"within {self._confirm_timeout:g}s (SPECTASK_CONFIRM_TIMEOUT)"
            ) from None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # our caller is being cancelled (Ctrl-C, a shutdown): not a failure
            # aiormq cancels the pending confirm when the broker closes the channel under it
            raise not_confirmed(message, f"the broker closed the channel: {exc}") from None
        except aiormq.exceptions.ConnectionInternalError as exc:
            # INTERNAL_ERROR (541): the channel's process failed on the broker, as a publish to
            # a quorum queue without a majority can make it do under load
            reason = exc.args[0] if exc.args else exc
            raise not_confirmed(message, f"the broker failed: {reason}") from exc
        except UNROUTABLE as exc:
            raise UnroutableError(message.exchange, message.routing_key) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(
                f"broker refused message {message.message_id} ({exc}); it was not stored"
            ) from exc
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            raise PublishError(
                f"connection lost before the broker confirmed message {message.message_id}: "
                f"{exc or type(exc).__name__}; publish it again under the same id (the "
                "collector keeps one record per task id; if the first copy was stored after "
                "all, the task may run twice)"
            ) from exc
