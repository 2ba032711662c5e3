"""Starting a service from generated routes: choose the task types, check every handler exists,
give each queue its role, and run the delivery loop.

Generated `WorkerApp.run` and `CollectorApp.run` both call `run_worker`; all behaviour stays in
`spectask.runtime`, where it is tested once. What a service is follows from its spec, decided
here once, at start, never per delivery:
- each queue's role from its routes' kind (`ReceiveRoute.kind`): a queue with a TAP route is
  served by the tap role (`spectask.runtime.tap`); any other by the task role
  (`spectask.runtime.task`), each of its routes ending a success in its result (TASK) or in the
  handler's reply (REQUEST: `spectask.runtime.responder`); RUNTIME routes (the cancellation
  stream) are served by the runtime itself;
- its outcomes from its send routes (`spectask.runtime.outcomes.outcomes_for`): with a result
  route, a worker's; without one, a collector's;
- live `started`/`progress` events only for a service with both an event and a result route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from spectask.errors import ConfigError, MissingHandlerError, SpectaskError
from spectask.protocol.names import (
    DEAD_LETTER_MESSAGE_TYPE,
    EVENT_MESSAGE_TYPE,
    HEARTBEAT_MESSAGE_TYPE,
    RESULT_MESSAGE_TYPE,
)
from spectask.runtime.broker import Broker
from spectask.runtime.consumer import Backoff, DeliveryLoop, Resource, Role, WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import Handler, HandlerResult, HandlerRunner
from spectask.runtime.heartbeat import Heartbeat
from spectask.runtime.metrics import WorkerMetrics
from spectask.runtime.outcomes import CollectorOutcomes, outcomes_for
from spectask.runtime.repeats import RepeatCheck
from spectask.runtime.responder import Responder
from spectask.runtime.tap import TapRole
from spectask.runtime.task import Attempts, TaskRole
from spectask.runtime.topology import ReceiveRoute, RouteKind, SendRoute, Topology

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
    The routes are the spec's: they are served under the broker's names (`Broker.naming`).
    """
    routes = [broker.naming.receive(route) for route in routes]
    send_routes = [broker.naming.send(route) for route in send_routes]
    runtime_routes = [route for route in routes if route.kind is RouteKind.RUNTIME]
    unknown = sorted({r.runtime or "" for r in runtime_routes} - {CANCELLATIONS})
    if unknown:
        raise SpectaskError(
            f"this runtime does not know x-spectask-runtime {', '.join(unknown)} on a receive "
            f"operation; it knows {CANCELLATIONS}"
        )
    cancel_route = next(iter(runtime_routes), None)
    selected = select_routes([r for r in routes if r.kind is not RouteKind.RUNTIME], task_types)
    check_handlers(selected, handlers)
    dead_letter_route = _send_route(send_routes, DEAD_LETTER_MESSAGE_TYPE)
    if dead_letter_route is None:
        raise SpectaskError(
            f"the service spec has no send operation with message type {DEAD_LETTER_MESSAGE_TYPE}; "
            "add a publishDeadLetter operation on the deadLetter channel so bad input has "
            "somewhere to go"
        )
    await broker.declare(topology)
    service = _service(
        broker,
        worker_id=worker_id,
        routes=selected,
        handlers=handlers,
        result_route=_send_route(send_routes, RESULT_MESSAGE_TYPE),
        dead_letter_route=dead_letter_route,
        event_route=_send_route(send_routes, EVENT_MESSAGE_TYPE),
        cancel_route=cancel_route,
        heartbeat_route=_send_route(send_routes, HEARTBEAT_MESSAGE_TYPE),
    )
    return await service.run(stop=stop or asyncio.Event(), burst=burst)


def _service(
    broker: Broker,
    *,
    worker_id: str,
    routes: Sequence[ReceiveRoute],
    handlers: Mapping[str, Handler],
    result_route: SendRoute | None,
    dead_letter_route: SendRoute,
    event_route: SendRoute | None,
    cancel_route: ReceiveRoute | None,
    heartbeat_route: SendRoute | None = None,
) -> DeliveryLoop:
    """The delivery loop over `routes`' queues, each with its role (see the module docstring)."""
    config = broker.config
    stats = WorkerStats()
    backoff = Backoff()
    runner = HandlerRunner(
        config.concurrency, config.isolation, progress_interval=config.progress_interval
    )
    attempts = Attempts(
        broker,
        runner,
        worker_id=worker_id,
        live_route=event_route if result_route is not None else None,
        cancel_route=cancel_route,
    )
    outcomes = outcomes_for(
        worker_id=worker_id,
        stats=stats,
        dead_letter_route=dead_letter_route,
        result_route=result_route,
        event_route=event_route,
        log_tasks=config.log_tasks,
    )
    # only a service with a side-effecting task type asks the store about redeliveries
    repeats = RepeatCheck(broker.rpc()) if any(r.policy.side_effects for r in routes) else None
    by_queue: dict[str, list[ReceiveRoute]] = {}
    for route in routes:
        by_queue.setdefault(route.queue, []).append(route)
    roles: dict[str, Role] = {}
    for queue, queue_routes in by_queue.items():
        taps = [route for route in queue_routes if route.kind is RouteKind.TAP]
        if taps:
            # A tap queue holds copies of any message: its tap takes them all.
            tap = taps[-1]
            roles[queue] = TapRole(
                tap,
                handlers[tap.operation],
                runner=runner,
                stats=stats,
                backoff=backoff,
                worker_id=worker_id,
                outcomes=outcomes if isinstance(outcomes, CollectorOutcomes) else None,
            )
            continue
        role = TaskRole(
            queue,
            attempts=attempts,
            outcomes=outcomes,
            stats=stats,
            backoff=backoff,
            worker_id=worker_id,
            config=config,
            repeats=repeats,
        )
        for route in queue_routes:
            if route.kind is RouteKind.REQUEST:
                assert route.reply is not None
                responder = Responder(route.reply, outcomes=outcomes, stats=stats, backoff=backoff)
                role.serve(route, handlers[route.operation], responder.answer, responder.refuse)
            else:
                role.serve(route, handlers[route.operation])
        roles[queue] = role
    resources: list[Resource] = [attempts]
    if heartbeat_route is not None:  # a worker's spec has publishHeartbeat; a collector's not
        heartbeat = Heartbeat(
            broker,
            heartbeat_route,
            worker_id=worker_id,
            task_types=[route.task_type for route in routes],
            stats=stats,
            in_flight=lambda: loop.in_flight,
        )
        resources.append(heartbeat)
        if config.metrics_port is not None:
            resources.append(
                WorkerMetrics(
                    config, worker_id=worker_id, stats=stats, in_flight=lambda: loop.in_flight
                )
            )
    loop = DeliveryLoop(
        broker,
        worker_id=worker_id,
        roles=roles,
        stats=stats,
        backoff=backoff,
        resources=resources,
        name=worker_id if isinstance(outcomes, CollectorOutcomes) else f"worker {worker_id}",
    )
    return loop
