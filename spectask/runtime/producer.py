"""Turning typed task payloads into task messages: the task envelope lives here, once.

A task message is the payload's JSON, with the task id as AMQP `message_id`, the message type
(`<task_type>.<operation>`) as AMQP `type`, the submission time as AMQP `timestamp`, the
priority as AMQP `priority` and the attempt number in the `x-spectask-attempt` header.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import UTC, datetime

from pydantic import BaseModel

from spectask.errors import TaskValidationError
from spectask.protocol.names import SUBMITTED_AT_HEADER
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.publisher import OutgoingMessage, Publisher
from spectask.runtime.submission import (
    DEFAULT_WINDOW,
    check_window,
    collect_publish,
    stream_publish,
)
from spectask.runtime.topology import SendRoute, Topology

BATCH_RUN_CHARS = 12  # 48 random bits per submit: a label reused by many runs still never collides


def new_task_id() -> str:
    """A random, URL-safe task id."""
    return uuid.uuid4().hex


MAX_TASK_ID_BYTES = 255  # the AMQP message_id is a shortstr (TaskHeaders says so)


def check_task_id(task_id: str) -> str:
    """A task id the protocol allows (1..255 bytes of UTF-8, no NUL), else TaskValidationError.

    Refused here, where the caller can fix it, rather than by the broker (a shortstr longer
    than 255 bytes breaks the publish) or by the store (which cannot hold a NUL).
    """
    size = len(task_id.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_TASK_ID_BYTES or "\0" in task_id:
        raise TaskValidationError(
            f"task id {task_id[:40]!r}{'...' if len(task_id) > 40 else ''} is not allowed: a "
            f"task id is 1 to {MAX_TASK_ID_BYTES} bytes of UTF-8 with no NUL character"
        )
    return task_id


def batch_task_ids(label: str, count: int) -> list[str]:
    """Ids `<label>-<run>-<n>` for one submit of `count` tasks under a batch label.

    A task id is unique for all time (the store keeps one record per id), while a batch label
    is a name people reuse (`--batch b1` twice). So the label is only a readable prefix
    (collectors still select `<label>-`): `<run>` is random per submit, so a reused label
    starts a new batch instead of re-using the ids of the old one.
    """
    run = uuid.uuid4().hex[:BATCH_RUN_CHARS]
    return [f"{label}-{run}-{index:06d}" for index in range(count)]


class TaskPublisher:
    """Builds and publishes task messages for the generated producer client."""

    def __init__(
        self, publisher: Publisher, topology: Topology, *, max_bytes: int | None = None
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        # what workers dead-letter as too_large: refused here instead, before the broker
        # stores (and a dead letter copies) a body no worker will run
        self._max_bytes = max_bytes if max_bytes is not None else RuntimeConfig().max_message_bytes

    def resolve_priority(self, route: SendRoute, priority: int | str | None) -> int:
        """A priority name from the spec, a number, or the task type's default."""
        if priority is None:
            return route.default_priority
        if isinstance(priority, str):
            try:
                return self._topology.priority(priority)
            except KeyError as exc:
                raise TaskValidationError(str(exc.args[0])) from None
        if not 0 <= priority <= 255:
            raise TaskValidationError(f"priority {priority} is outside 0..255")
        return priority

    def build(
        self,
        route: SendRoute,
        payload: BaseModel,
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> OutgoingMessage:
        """Validate the payload against its message schema and build the message."""
        if not isinstance(payload, route.model):
            raise TaskValidationError(
                f"{route.operation} takes a {route.model.__name__}, not {type(payload).__name__}"
            )
        route = self._publisher.naming.send(route)  # the spec's route, on this broker's names
        now = datetime.now(UTC)
        body = payload.model_dump_json(by_alias=True, exclude_unset=True).encode()
        if len(body) > self._max_bytes:
            raise TaskValidationError(
                f"{route.message_type} task is {len(body):,} bytes; workers refuse tasks over "
                f"{self._max_bytes:,} bytes (SPECTASK_MAX_MESSAGE_BYTES), so it was not sent: "
                "pass large inputs by reference (a path or URL) instead"
            )
        return OutgoingMessage(
            exchange=route.exchange,
            routing_key=route.routing_key,
            body=body,
            message_id=new_task_id() if task_id is None else check_task_id(task_id),
            message_type=route.message_type,
            priority=self.resolve_priority(route, priority),
            # no x-spectask-attempt: absent is attempt 1 (TaskHeaders), one header less to decode
            headers={SUBMITTED_AT_HEADER: now.isoformat()},
            timestamp=now,
        )

    async def submit(
        self,
        route: SendRoute,
        payload: BaseModel,
        *,
        priority: int | str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Publish one task and return its id once the broker has confirmed it."""
        message = self.build(route, payload, priority=priority, task_id=task_id)
        await self._publisher.publish(message)
        return message.message_id

    async def submit_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        window: int = DEFAULT_WINDOW,
        on_confirmed: Callable[[int], None] | None = None,
        confirmed: list[str] | None = None,
    ) -> list[str]:
        """Publish prepared tasks, `window` confirms in flight; every id once all are confirmed.

        Any iterable works, a generator included. `confirmed` collects the ids as the broker
        confirms them; a failure raises `SubmitError` with the confirmed and unconfirmed ids
        (`spectask.runtime.submission`). For a batch too large to keep its ids, `submit_stream`.
        """
        return await collect_publish(
            self._publisher,
            messages,
            window=window,
            on_confirmed=on_confirmed,
            confirmed=confirmed,
        )

    def submit_stream(
        self, messages: Iterable[OutgoingMessage], *, window: int = DEFAULT_WINDOW
    ) -> AsyncGenerator[str, None]:
        """Publish prepared tasks and yield each id as the broker confirms it (bounded memory).

        Nothing is held but the `window` unconfirmed publishes; a failure raises `SubmitError`
        after the last confirmed id, naming the unconfirmed ones.
        """
        return stream_publish(self._publisher, messages, window=check_window(window))
