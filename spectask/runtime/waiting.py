"""Waiting for tasks to become final by polling the status operation (not by consuming results).

Status comes from the collectors' store, so any number of clients can wait on their own tasks
while the results queue keeps its one job. Generated clients expose this as
`ProducerClient.wait(task_ids, timeout)`; it works with any status reply shaped
`{tasks: [{task_id, state, ...}]}` (the spec's `x-spectask-runtime: status`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from spectask.errors import PublishError, SpectaskError
from spectask.protocol import names
from spectask.runtime.config import RuntimeConfig

# the protocol's final task states, and the most ids one StatusRequest may carry (maxItems)
FINAL_STATES = frozenset(state.value for state in names.FINAL_STATES)
BATCH = names.STATUS_REQUEST_MAX_IDS


class StatusView(Protocol):
    @property
    def task_id(self) -> str: ...

    @property
    def state(self) -> enum.Enum: ...


V = TypeVar("V", bound=StatusView)
V_co = TypeVar("V_co", bound=StatusView, covariant=True)


class StatusReply(Protocol[V_co]):
    @property
    def tasks(self) -> Sequence[V_co]: ...


class WaitTimeoutError(SpectaskError, Generic[V]):
    """Some tasks were not final when the wait ran out; `final` holds the ones that were."""

    def __init__(self, timeout: float, pending: Sequence[str], final: dict[str, V]) -> None:
        shown = ", ".join(pending[:3]) + (
            f" and {len(pending) - 3} more" if len(pending) > 3 else ""
        )
        super().__init__(
            f"{len(pending)} of {len(pending) + len(final)} tasks not final after {timeout:g}s "
            f"(still pending: {shown}); `spectask status ID` shows where one is"
        )
        self.pending = list(pending)
        self.final = final


def is_final(view: StatusView) -> bool:
    return str(view.state.value).upper() in FINAL_STATES


async def wait_until_final(
    get_status: Callable[..., Awaitable[StatusReply[V]]],
    task_ids: Sequence[str],
    *,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
    poll_interval: float = 0.5,
    rpc_timeout: float | None = None,
) -> dict[str, V]:
    """Poll `get_status(ids, timeout=rpc_timeout)` until every task is final; see the module doc.

    `rpc_timeout` None means SPECTASK_STATUS_TIMEOUT (RuntimeConfig.status_timeout): one place
    for the default, so the command line, generated clients and tests cannot drift apart.
    Returns the final views by task id in the order given (duplicates once); raises
    WaitTimeoutError after `timeout` seconds, and lets RpcTimeoutError through; a request
    that could not be sent (the broker away) is asked again at the next poll.
    """
    if isinstance(task_ids, str):
        raise TypeError("task_ids must be a sequence of ids, not one string")
    order = list(dict.fromkeys(task_ids))
    if rpc_timeout is None:
        rpc_timeout = RuntimeConfig().status_timeout
    deadline = time.monotonic() + timeout
    final: dict[str, V] = {}
    pending = order
    while pending:
        for start in range(0, len(pending), BATCH):
            try:
                reply = await get_status(pending[start : start + BATCH], timeout=rpc_timeout)
            except PublishError:
                # The connection is down (its loss is logged once, as is its return): ask
                # again at the next poll; the robust connection reconnects meanwhile.
                continue
            final.update((view.task_id, view) for view in reply.tasks if is_final(view))
        before = len(pending)
        pending = [task_id for task_id in pending if task_id not in final]
        if on_progress is not None and before != len(pending):
            on_progress(before - len(pending))
        if not pending:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(timeout, pending, _ordered(order, final))
        await asyncio.sleep(min(poll_interval, remaining))
    return _ordered(order, final)


def _ordered(order: Sequence[str], final: dict[str, V]) -> dict[str, V]:
    return {task_id: final[task_id] for task_id in order if task_id in final}
