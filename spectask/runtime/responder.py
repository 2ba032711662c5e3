"""The responder role: a request's success is the handler's reply, sent to its `reply_to`.

A REQUEST route (`ReceiveRoute.kind`: an operation with a `reply`, such as the collector's
status RPC) is decoded, validated, run and failed like a task (`spectask.runtime.task`); only
its success differs, and that is this unit: the handler's return value, validated against the
reply's schema, goes to the request's `reply_to` through the default exchange with the
request's correlation id, instead of a result. A reply that breaks its schema fails the request
for good (`InvalidReply`): the same handler would only fail the same way again.

A request that cannot run (no or another message type, not JSON, breaking its schema, too
large) is refused here rather than dead-lettered: the caller, in whatever language, gets a
reply with `error` set at once instead of waiting for its timeout, and the dead-letter queue
keeps holding tasks only. A request is not a task, so it needs no message_id. A refusal needs
a reply schema with an `error` property (the protocol's StatusReply has one); a request whose
reply cannot say `error` is dead-lettered as before, and one without a reply_to, which nobody
can be told about, is acked with a warning line.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from spectask.runtime.consumer import Backoff, NextHops, WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.deadletter import DeadReason
from spectask.runtime.outcomes import Failure, Outcomes, summarize
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.topology import ReceiveRoute, ReplySpec
from spectask.runtime.transport import IncomingMessage

log = logging.getLogger(__name__)


class Responder:
    """The success of one REQUEST route: its reply (a `Finish` of the task role)."""

    def __init__(
        self, reply: ReplySpec, *, outcomes: Outcomes, stats: WorkerStats, backoff: Backoff
    ) -> None:
        self._reply_spec = reply
        self._outcomes = outcomes
        self._stats = stats
        self._backoff = backoff

    def answer(
        self,
        message: IncomingMessage,
        route: ReceiveRoute,
        context: TaskContext,
        started_at: datetime,
        result: dict[str, Any] | None,
    ) -> NextHops:
        try:
            reply = self._reply(message, result)
        except ValidationError as exc:
            error = {"type": "InvalidReply", "message": summarize(exc)}
            failure = Failure(DeadReason.PERMANENT, error)
            return self._outcomes.failed(message, route, context, started_at, failure)
        self._backoff.failures = 0
        self._stats.succeeded += 1
        return reply

    def refuse(
        self, message: IncomingMessage, queue: str, reason: DeadReason, error: str
    ) -> NextHops:
        """An invalid request's answer: a reply whose `error` says why (see the module doc)."""
        refusal = refusal_of(self._reply_spec, {"type": reason.value, "message": error})
        if refusal is None:
            return self._outcomes.dead(message, queue, reason, error)
        if not message.reply_to:
            log.warning(
                "request %s from %s refused, and it has no reply_to to say so: %s: %s",
                message.correlation_id,
                queue,
                reason,
                error,
            )
            return ()
        log.warning(
            "request %s from %s refused: %s: %s", message.correlation_id, queue, reason, error
        )
        return (self._to_caller(message, refusal),)

    def _reply(self, message: IncomingMessage, result: dict[str, Any] | None) -> NextHops:
        """The handler's reply, to the request's `reply_to` with its correlation id.

        Not mandatory: a caller that gave up is gone, and its reply is dropped rather than
        keeping the request in the queue forever.
        """
        reply = self._reply_spec
        model = reply.model.model_validate(result)
        if not message.reply_to:
            log.warning("request %s has no reply_to; nobody to answer", message.message_id)
            return ()
        return (self._to_caller(message, model),)

    def _to_caller(self, message: IncomingMessage, model: BaseModel) -> OutgoingMessage:
        return OutgoingMessage(
            exchange="",
            routing_key=message.reply_to or "",
            body=model.model_dump_json(by_alias=True, exclude_none=True).encode(),
            message_id=message.message_id or "",
            message_type=self._reply_spec.message_type,
            correlation_id=message.correlation_id,
            reply=True,
        )


def refusal_of(reply: ReplySpec, error: Mapping[str, str]) -> BaseModel | None:
    """The reply that refuses a request with `error` (an ErrorInfo), or None if it cannot.

    It holds `error` and an empty list for each other required array (StatusReply: `tasks`).
    """
    fields = reply.model.model_fields
    if "error" not in fields:
        return None
    empty: dict[str, Any] = {
        field.alias or name: []
        for name, field in fields.items()
        if field.is_required() and typing.get_origin(field.annotation) is list
    }
    try:
        return reply.model.model_validate({**empty, "error": dict(error)})
    except ValidationError:
        return None
