"""Which workers are alive: the heartbeat stream folded into one entry per worker.

Workers publish a WorkerHeartbeat every few seconds (`spectask.runtime.heartbeat`); the broker
keeps the last hour of them in the `spectask.heartbeats` stream. A watcher reads the stream from
LOOKBACK seconds ago without taking anything away, so it knows every live worker at once, any
number of watchers (several dashboards, `spectask workers`) can read it side by side, and a
restarted watcher loses nothing. A worker whose last heartbeat is more than MISSED_BEATS
intervals old is shown as lost: it was killed, frozen or cut off (a clean stop looks the same
after three intervals, and that is fine: it is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from pydantic import ValidationError

from spectask.errors import SpectaskError
from spectask.protocol.models import WorkerHeartbeat
from spectask.protocol.names import HEARTBEAT_MESSAGE_TYPE
from spectask.runtime.broker import Broker
from spectask.runtime.transport import NOT_FOUND, Channel, IncomingMessage

log = logging.getLogger(__name__)

HEARTBEAT_STREAM = "spectask.heartbeats"  # the protocol's heartbeats channel (tests check it)
MISSED_BEATS = 3
LOOKBACK = timedelta(minutes=2)  # how far back a new watcher reads: lost workers show too
FORGET_AFTER = timedelta(minutes=10)  # a lost worker leaves the list after this long
STREAM_PREFETCH = 200


@dataclass(frozen=True)
class WorkerView:
    """A worker as its last heartbeat describes it, and whether it is still alive."""

    heartbeat: WorkerHeartbeat
    lost: bool

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = self.heartbeat.model_dump(mode="json", exclude_none=True)
        document["last_heartbeat"] = document.pop("at")
        document["state"] = "lost" if self.lost else "online"
        return document


class WorkerBoard:
    """The last heartbeat of each worker; `views()` says which are online and which lost."""

    def __init__(self) -> None:
        self._latest: dict[str, WorkerHeartbeat] = {}
        self.ignored = 0

    def add(self, heartbeat: WorkerHeartbeat) -> None:
        known = self._latest.get(heartbeat.worker_id)
        if known is None or heartbeat.at >= known.at:
            self._latest[heartbeat.worker_id] = heartbeat

    def add_message(self, message: IncomingMessage) -> None:
        """Fold one stream message in; a body that is no WorkerHeartbeat is counted, not fatal."""
        if message.type != HEARTBEAT_MESSAGE_TYPE:
            self.ignored += 1
            return
        try:
            self.add(WorkerHeartbeat.model_validate(json.loads(message.body)))
        except (ValueError, ValidationError, UnicodeDecodeError) as exc:
            self.ignored += 1
            log.debug("ignored a heartbeat that is not a WorkerHeartbeat: %s", exc)

    def views(self, now: datetime | None = None) -> list[WorkerView]:
        """Every worker heard from in the last FORGET_AFTER, online ones first, by id."""
        now = now or datetime.now(UTC)
        views = [
            WorkerView(beat, lost=now - beat.at > timedelta(seconds=MISSED_BEATS * beat.interval))
            for beat in self._latest.values()
            if now - beat.at <= FORGET_AFTER
        ]
        return sorted(views, key=lambda view: (view.lost, view.heartbeat.worker_id))

    def counts(self, now: datetime | None = None) -> Mapping[str, int]:
        views = self.views(now)
        lost = sum(view.lost for view in views)
        return {"online": len(views) - lost, "lost": lost}


class WorkerWatch:
    """Follows the heartbeat stream into a WorkerBoard, from LOOKBACK ago, until closed."""

    def __init__(self, broker: Broker, board: WorkerBoard | None = None) -> None:
        self._broker = broker
        self.board = board or WorkerBoard()
        self._channel: Channel | None = None
        self.received = asyncio.Event()  # set at each heartbeat (tests and the CLI wait on it)
        self.newest: datetime | None = None

    async def start(self) -> None:
        """Subscribe; a clear error when no worker has ever declared the stream."""
        channel = self._channel = await self._broker.connection.channel()
        await channel.set_qos(prefetch_count=STREAM_PREFETCH)  # a stream consumer needs one
        stream = self._broker.naming.name(HEARTBEAT_STREAM)
        try:
            queue = await channel.get_queue(stream, ensure=True)
        except NOT_FOUND:
            self._channel = None
            raise HeartbeatStreamMissingError(
                f"the heartbeat stream {stream!r} does not exist: no worker of this "
                "spectask version has started on this broker (a worker declares it)"
            ) from None
        since = datetime.now(UTC) - LOOKBACK
        await queue.consume(self._on_message, no_ack=False, arguments={"x-stream-offset": since})

    async def _on_message(self, message: IncomingMessage) -> None:
        self.board.add_message(message)
        await message.ack()
        self.received.set()

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await self._channel.close()
            self._channel = None


class HeartbeatStreamMissingError(SpectaskError):
    """The broker has no heartbeat stream yet: no worker has started there."""
