"""The protocol's wire names: message types and header names, as Python constants.

Each constant spells a name the protocol document (spectask.asyncapi.yaml beside this module)
defines; `tests/test_protocol.py` fails when one differs from the document or when the
document's header schemas gain a header with no constant here. Code uses these, never a
string literal of its own.
"""

from __future__ import annotations

from typing import Final

import annotated_types

from spectask.protocol.models import EventKind, StatusRequest, TaskState

# AMQP `type` of each protocol message (components.messages.*.bindings.amqp.messageType)
RESULT_MESSAGE_TYPE: Final = "spectask.result"
RESULT_BATCH_MESSAGE_TYPE: Final = "spectask.result_batch"
DEAD_LETTER_MESSAGE_TYPE: Final = "spectask.dead_letter"
EVENT_MESSAGE_TYPE: Final = "spectask.event"
CANCEL_MESSAGE_TYPE: Final = "spectask.cancel"
STATUS_REQUEST_MESSAGE_TYPE: Final = "spectask.status_request"
STATUS_REPLY_MESSAGE_TYPE: Final = "spectask.status_reply"
TASK_COPY_MESSAGE_TYPE: Final = "spectask.task.*"
# the first word of every protocol message type: the "task type" of the protocol's own routes
PROTOCOL_TASK_TYPE: Final = "spectask"

# where status requests go (channels.statusRequests: its binding to the rpc exchange)
STATUS_EXCHANGE: Final = "rpc"
STATUS_ROUTING_KEY: Final = "status"
DEAD_LETTER_COPY_MESSAGE_TYPE: Final = "spectask.dead_letter.*"
HEARTBEAT_MESSAGE_TYPE: Final = "spectask.heartbeat"

# headers of a task (components.schemas.TaskHeaders)
ATTEMPT_HEADER: Final = "x-spectask-attempt"
SUBMITTED_AT_HEADER: Final = "x-spectask-submitted-at"
FIRST_FAILURE_HEADER: Final = "x-spectask-first-failure-at"
LAST_ERROR_HEADER: Final = "x-spectask-last-error"

# headers of a dead letter (components.schemas.DeadLetterHeaders)
REASON_HEADER: Final = "x-spectask-reason"
ERROR_HEADER: Final = "x-spectask-error"
TRACEBACK_HEADER: Final = "x-spectask-traceback"
ATTEMPTS_HEADER: Final = "x-spectask-attempts"
ORIGIN_QUEUE_HEADER: Final = "x-spectask-origin-queue"
ORIGIN_EXCHANGE_HEADER: Final = "x-spectask-origin-exchange"
ORIGIN_ROUTING_KEY_HEADER: Final = "x-spectask-origin-routing-key"
LAST_FAILURE_HEADER: Final = "x-spectask-last-failure-at"
# FIRST_FAILURE_HEADER above is a dead-letter header too (kept from the task's headers)

TASK_HEADERS: Final = (
    ATTEMPT_HEADER,
    SUBMITTED_AT_HEADER,
    FIRST_FAILURE_HEADER,
    LAST_ERROR_HEADER,
)
DEAD_LETTER_HEADERS: Final = (
    REASON_HEADER,
    ERROR_HEADER,
    TRACEBACK_HEADER,
    ATTEMPTS_HEADER,
    ORIGIN_QUEUE_HEADER,
    ORIGIN_EXCHANGE_HEADER,
    ORIGIN_ROUTING_KEY_HEADER,
    FIRST_FAILURE_HEADER,
    LAST_FAILURE_HEADER,
)


# TaskState's x-spectask-final-states: a task in one of them never changes state again
FINAL_STATES: Final = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED}
)

# EventKind's x-spectask-on-the-events-exchange: the only kinds a TaskEvent may have on the
# wire; the others are the collector's own names for what it learns from copies and results
EVENTS_ON_THE_WIRE: Final = frozenset(
    {EventKind.STARTED, EventKind.PROGRESS, EventKind.RETRYING, EventKind.CANCELLED}
)


def _max_items(field: str) -> int:
    """An array's maxItems in the StatusRequest schema, as the generated model carries it."""
    for rule in StatusRequest.model_fields[field].metadata:
        if isinstance(rule, annotated_types.MaxLen):
            return int(rule.max_length)
    raise AssertionError(f"StatusRequest.{field} has no maxItems")


# the most task ids one status request may carry (StatusRequest.task_ids maxItems)
STATUS_REQUEST_MAX_IDS: Final = _max_items("task_ids")
