"""Acks of one consumer channel, sent together: consecutive deliveries in one `multiple=True`.

RabbitMQ confirms a worker's result publishes in bulk (one `basic.ack multiple` for many), so
the deliveries waiting on those confirms resume in the same turn of the event loop; a batch of
results (`spectask.runtime.batching`) releases all of its deliveries at once. Each of them
asks `AckWindow.ack`; the first one yields a single loop turn so the others join, then one
frame settles them: `multiple=True` on the highest delivery tag below which every delivery
still unsettled on the channel is among those being acked, one plain ack each for the rest.

A `multiple=True` ack covers *every* unsettled tag up to it, so the window must know them all:
the delivery loop calls `track` for each delivery and `forget` when one is settled some other
way (a nack). Tags are per AMQP channel, and a reconnected channel starts again at 1, so the
unsettled tags are kept per channel (the aio-pika message's `channel`): deliveries of another
channel are never covered by one ack.

Frames go out from one sender at a time, in order (see `ack`). Never an ack before its caller
says so: `ack` is only called after a delivery's next hops are
confirmed, so sending the frames a loop turn later only ever delays an ack, never advances one.
A lost ack is only logged (the broker redelivers the message), as before.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq

from spectask.runtime.transport import IncomingMessage

log = logging.getLogger(__name__)


# The channel of a delivery whose channel has closed: the broker has taken such deliveries back
# (it redelivers them), so there is nothing left to ack, and no tag of it to keep.
CLOSED = object()


def _channel_of(message: IncomingMessage) -> object:
    """The delivery's channel (aio-pika: its aiormq channel), or CLOSED once it has closed.

    aio-pika's `message.channel` raises ChannelInvalidStateError (a RuntimeError) once the
    channel has closed; a lost connection must not make that error escape from here, or the
    acks of the other deliveries in the same flush (on the new channel) would never be sent
    and would hold their prefetch slots until the worker stops.
    """
    try:
        channel = getattr(message, "channel", None)
    except RuntimeError:
        return CLOSED
    return CLOSED if getattr(channel, "is_closed", False) else channel


def channel_closed(message: IncomingMessage) -> bool:
    """The delivery's channel has closed: the broker has taken the delivery back."""
    return _channel_of(message) is CLOSED


class AckWindow:
    """Unsettled deliveries of a consumer channel, and their acks sent together."""

    __slots__ = ("_flushing", "_pending", "_unsettled", "frames", "settled")

    def __init__(self) -> None:
        self._unsettled: dict[object, set[int]] = {}
        self._pending: list[IncomingMessage] = []
        self._flushing: asyncio.Future[None] | None = None
        self.frames = 0  # ack frames sent (what a test checks `multiple=True` saved)
        self.settled = 0  # deliveries those frames acked

    def track(self, message: IncomingMessage) -> None:
        """A delivery arrived: unsettled until it is acked here or `forget` is called."""
        tag = message.delivery_tag
        channel = _channel_of(message)
        if tag is not None and channel is not CLOSED:
            self._unsettled.setdefault(channel, set()).add(tag)

    def forget(self, message: IncomingMessage) -> None:
        """A delivery was settled some other way (nacked, requeued)."""
        tags = self._unsettled.get(_channel_of(message))  # CLOSED: none
        if tags is not None and message.delivery_tag is not None:
            tags.discard(message.delivery_tag)

    async def ack(self, message: IncomingMessage) -> None:
        """Ack `message` together with the other deliveries acked in this loop turn.

        The frames go out from one flush task of the window's own, not from the caller's task:
        a caller cancelled while it waits (a shutdown, a lost connection) must not take the
        acks of the deliveries that joined its flush down with it; they would stay unacked,
        and their callers would have returned as if they were acked.
        """
        self._pending.append(message)
        flushing = self._flushing
        if flushing is None or flushing.done():
            flushing = self._flushing = asyncio.ensure_future(self._flush())
        await asyncio.shield(flushing)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # the other deliveries woken by the same confirm join
            # One sender at a time, in order: a later `multiple=True` may cover a tag an
            # earlier send still has to ack on its own, which the broker would refuse (and
            # close the channel) if that frame came second.
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._flushing = None

    def _closed(self, messages: list[IncomingMessage]) -> None:
        """Deliveries of a channel that has closed: the broker redelivers them; say so once."""
        log.warning(
            "task %s: ack lost (its channel closed); the broker will redeliver %s",
            messages[0].message_id,
            f"it and {len(messages) - 1} more" if len(messages) > 1 else "it",
        )
        # and forget the tags of every channel that has closed since (a reconnect's leftovers)
        for channel in [c for c in self._unsettled if getattr(c, "is_closed", False)]:
            del self._unsettled[channel]

    async def _send(self, batch: list[IncomingMessage]) -> None:
        by_channel: dict[object, list[IncomingMessage]] = {}
        for message in batch:
            by_channel.setdefault(_channel_of(message), []).append(message)
        for channel, messages in by_channel.items():
            if channel is CLOSED:
                self._closed(messages)
                continue
            unsettled = self._unsettled.get(channel, set())
            acked = {m.delivery_tag for m in messages}
            # the longest run of the lowest unsettled tags that are all being acked now
            highest: int | None = None
            for tag in sorted(unsettled):
                if tag not in acked:
                    break
                highest = tag
            unsettled.difference_update(t for t in acked if t is not None)
            singles = messages
            if highest is not None and len(messages) > 1:
                last = next(m for m in messages if m.delivery_tag == highest)
                top = highest
                singles = [m for m in messages if m.delivery_tag is None or m.delivery_tag > top]
                await self._ack(last, multiple=True, count=len(messages) - len(singles))
            for message in singles:
                await self._ack(message, multiple=False, count=1)

    async def _ack(self, message: IncomingMessage, *, multiple: bool, count: int) -> None:
        try:
            await message.ack(multiple=multiple)
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError, asyncio.CancelledError) as exc:
            # CancelledError: aiormq cancels the frames it had not written when its connection
            # closed. Only this window's flush task runs here, and nothing else cancels it, so
            # it is the lost ack, not a cancellation to pass on; the other frames still go.
            log.warning(
                "task %s: ack lost (%s); the broker will redeliver %s",
                message.message_id,
                exc,
                f"it and {count - 1} more" if count > 1 else "it",
            )
            return
        self.frames += 1
        self.settled += count
