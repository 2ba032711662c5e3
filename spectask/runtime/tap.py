"""The tap role: a copy queue's handler gets every message, body undecoded, and never dead-letters.

A TAP route (`ReceiveRoute.kind`: its message type ends in `*`) serves a queue that holds
copies the broker made of other traffic — the collector's copy of every task, of every dead
letter. Any message type is taken; the payload is the raw body (the model's root), with the
headers in the context. There is no next hop: the handler records, then the delivery is acked.
A tap never dead-letters what came from the dead-letter exchange (its queue may be bound to
it: the collector's copy of every dead letter). Its handler's failures end so:
- the store cannot hold what the message says (`spectask.store.StoreDataError`, a value out
  of range, ...): with the collector's outcomes, a task copy goes to a dead letter of its own
  with reason `unstorable` (`duplicate_id` for a task id that belongs to a different task)
  and a dead-letter copy is acked without storing (its original is
  in the dead-letter queue already; `CollectorOutcomes.unstorable` says why this cannot loop);
  either way the delivery is acked and the queue keeps flowing;
- any other PermanentTaskError drops the message (logged);
- any other failure gives it back to its queue after a backoff (RequeueLater), as a store that
  is down would need.
"""

from __future__ import annotations

import logging

from spectask.errors import PermanentTaskError
from spectask.runtime.consumer import Backoff, NextHops, RequeueLater, WorkerStats, delivery_context
from spectask.runtime.execution import Handler, HandlerRunner
from spectask.runtime.outcomes import STORE_REFUSALS, CollectorOutcomes
from spectask.runtime.topology import ReceiveRoute
from spectask.runtime.transport import IncomingMessage

log = logging.getLogger(__name__)


class TapRole:
    """Serves one tap queue with its route's handler; see the module docstring."""

    def __init__(
        self,
        route: ReceiveRoute,
        handler: Handler,
        *,
        runner: HandlerRunner,
        stats: WorkerStats,
        backoff: Backoff,
        worker_id: str,
        outcomes: CollectorOutcomes | None = None,
    ) -> None:
        self._route = route
        self._outcomes = outcomes
        self._handler = handler
        self._runner = runner
        self._stats = stats
        self._backoff = backoff
        self._worker_id = worker_id

    async def handle(self, message: IncomingMessage) -> NextHops:
        route = self._route
        message_type = message.type or ""
        context = delivery_context(
            message, route, self._worker_id, message_type, message_type.partition(".")[0]
        )
        payload = route.model.model_construct(root=message.body)
        try:
            await self._runner.run(self._handler, payload, context, route.policy.time_limit)
        except PermanentTaskError as exc:
            refused = STORE_REFUSALS.get(type(exc).__name__)
            if refused is not None and self._outcomes is not None:
                self._backoff.failures = 0
                return self._outcomes.unstorable(message, route.queue, str(exc), refused)
            log.warning("dropping %s from %s: %s", message.message_id, route.queue, exc)
            return ()
        except Exception as exc:
            raise RequeueLater(f"{type(exc).__name__}: {exc}") from exc
        self._stats.processed += 1
        self._backoff.failures = 0
        return ()
