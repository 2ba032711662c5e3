"""Starting a worker from generated routes: choose the task types, check every handler exists.

Generated `WorkerApp.run` calls `run_worker`; all behaviour stays here, where it is tested once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from spectask.errors import ConfigError, MissingHandlerError, SpectaskError
from spectask.protocol.names import (
    DEAD_LETTER_MESSAGE_TYPE,
    EVENT_MESSAGE_TYPE,
    RESULT_MESSAGE_TYPE,
)
from spectask.runtime.broker import Broker
from spectask.runtime.consumer import WorkerRuntime, WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import Handler, HandlerResult
from spectask.runtime.topology import ReceiveRoute, SendRoute, Topology

CANCELLATIONS = "cancellations"  # x-spectask-runtime of the worker's cancellation stream

__all__ = [
    "Handler",
    "HandlerResult",
    "TaskContext",
    "WorkerStats",
    "check_handlers",
    "run_worker",
    "select_routes",
]


def select_routes(
    routes: Sequence[ReceiveRoute], task_types: Collection[str] | None
) -> list[ReceiveRoute]:
    """The receive routes of the requested task types (all of them when none are given)."""
    if not task_types:
        return list(routes)
    known = sorted({route.task_type for route in routes})
    unknown = sorted(set(task_types) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown task type(s) {', '.join(unknown)}; this worker serves {', '.join(known)}"
        )
    return [route for route in routes if route.task_type in task_types]


def check_handlers(routes: Sequence[ReceiveRoute], handlers: Mapping[str, Handler]) -> None:
    """Refuse to start when a receive operation has no handler (naming every missing one)."""
    missing = [route.operation for route in routes if route.operation not in handlers]
    if missing:
        raise MissingHandlerError(
            "no handler registered for receive operation(s): "
            + ", ".join(missing)
            + "; register one with the app's decorator of the same name (snake_case), "
            "or start the worker with --types to serve fewer task types"
        )


def _send_route(send_routes: Sequence[SendRoute], message_type: str) -> SendRoute | None:
    return next((route for route in send_routes if route.message_type == message_type), None)


async def run_worker(
    broker: Broker,
    *,
    topology: Topology,
    routes: Sequence[ReceiveRoute],
    handlers: Mapping[str, Handler],
    send_routes: Sequence[SendRoute],
    worker_id: str,
    task_types: Collection[str] | None = None,
    stop: asyncio.Event | None = None,
    burst: bool = False,
) -> WorkerStats:
    """Declare the topology and consume until `stop` is set (or, with `burst`, until idle).

    The broker's own configuration (prefetch, concurrency, limits) is what the runtime uses.
    """
    runtime_routes = [route for route in routes if route.runtime is not None]
    unknown = sorted({r.runtime or "" for r in runtime_routes} - {CANCELLATIONS})
    if unknown:
        raise SpectaskError(
            f"this runtime does not know x-spectask-runtime {', '.join(unknown)} on a receive "
            f"operation; it knows {CANCELLATIONS}"
        )
    cancel_route = next(iter(runtime_routes), None)
    selected = select_routes([r for r in routes if r.runtime is None], task_types)
    check_handlers(selected, handlers)
    dead_letter_route = _send_route(send_routes, DEAD_LETTER_MESSAGE_TYPE)
    if dead_letter_route is None:
        raise SpectaskError(
            f"the service spec has no send operation with message type {DEAD_LETTER_MESSAGE_TYPE}; "
            "add a publishDeadLetter operation on the deadLetter channel so bad input has "
            "somewhere to go"
        )
    await broker.declare(topology)
    runtime = WorkerRuntime(
        broker,
        worker_id=worker_id,
        routes=selected,
        handlers=handlers,
        result_route=_send_route(send_routes, RESULT_MESSAGE_TYPE),
        dead_letter_route=dead_letter_route,
        event_route=_send_route(send_routes, EVENT_MESSAGE_TYPE),
        cancel_route=cancel_route,
    )
    return await runtime.run(stop=stop or asyncio.Event(), burst=burst)
