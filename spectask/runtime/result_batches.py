"""A collector's intake of ResultBatch messages: each result handled as if it had come alone.

Result mode `batched` (`spectask.runtime.batching`) puts the results of many tasks in one
message. A collector app registers one handler for results (`collect_result`); when it has
none for result batches, `batch_intake` gives the batch route a handler that calls the result
handler once per element, in order, with the context of that result (its task id and message
type), so every collector — `spectask collect`, `run_collector`, a user's own — stores every
result of a batch with no code of its own, and the status RPC answers for each task.

A batch is acked once: only after every element was handled. A store that is down fails the
handler, and the whole batch waits in its queue (RequeueLater) to be handled again: the store
is idempotent by task id, so the elements stored before the failure are stored once. A result
the store refuses (`StoreDataError`, `DuplicateTaskIdError`) does not stop the others: every
element is tried, then the first refusal is raised, so the batch is dead-lettered with it
(`unstorable`, naming the task) while the results that could be stored are.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from spectask.protocol.names import RESULT_BATCH_MESSAGE_TYPE, RESULT_MESSAGE_TYPE
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import Handler, HandlerResult
from spectask.runtime.outcomes import STORE_REFUSALS
from spectask.runtime.topology import ReceiveRoute


def batch_intake(
    routes: Sequence[ReceiveRoute], handlers: Mapping[str, Handler]
) -> Mapping[str, Handler]:
    """`handlers`, plus a per-element handler for each result-batch route that has none."""
    added: dict[str, Handler] = {}
    for route in routes:
        if route.message_type != RESULT_BATCH_MESSAGE_TYPE or route.operation in handlers:
            continue
        single = next(
            (
                handlers[r.operation]
                for r in routes
                if r.message_type == RESULT_MESSAGE_TYPE
                and r.queue == route.queue
                and r.operation in handlers
            ),
            None,
        )
        if single is not None:
            added[route.operation] = _each(single)
    return {**handlers, **added} if added else handlers


def _each(handle_one: Handler) -> Handler:
    async def handle_batch(batch: Any, context: TaskContext) -> HandlerResult:
        refused: Exception | None = None
        for result in batch.results:
            one = dataclasses.replace(
                context, task_id=result.task_id, message_type=result.message_type
            )
            try:
                outcome = handle_one(result, one)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                if type(exc).__name__ not in STORE_REFUSALS:
                    raise  # the store is down (or a bug): the whole batch is handled again
                refused = refused or exc
        if refused is not None:
            raise refused
        return None

    return handle_batch
