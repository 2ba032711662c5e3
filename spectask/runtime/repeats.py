"""Not running a side-effecting task twice: ask the task store before a possible repeat runs.

At-least-once delivery repeats finished work whenever an ack is lost: a worker killed after its
result was confirmed, or a broker killed -9 (a classic queue forgets the acks of its last
seconds: ~2,450 of 5,000 finished tasks ran again in one chaos run). For most handlers a repeat
only costs time. For a handler that acts outside spectask (`sideEffects` in the task type's
`x-spectask-policy`: an e-mail) a repeat is a second e-mail.

Every delivery that may repeat finished work arrives with AMQP `redelivered` set (measured on
RabbitMQ 3.10 after a broker kill -9: a classic queue marks every recovered message, a quorum
queue the ones it had delivered; see README "The guarantees"). So for those deliveries only,
the worker asks the collectors (the status RPC, answered from the store) whether the task
already has a final outcome; if it has, the delivery is acked without running the handler, and
the worker logs that it skipped a repeat. A first delivery costs nothing extra.

When no collector answers, the task is not run blind: the delivery goes back to its queue
(RequeueLater, with the loop's backoff) until one does. Waiting delays an e-mail; running
it might send it twice, which the policy exists to prevent.
"""

from __future__ import annotations

from spectask.errors import PublishError, RpcTimeoutError
from spectask.protocol import models
from spectask.protocol.names import (
    FINAL_STATES,
    STATUS_EXCHANGE,
    STATUS_REPLY_MESSAGE_TYPE,
    STATUS_REQUEST_MESSAGE_TYPE,
    STATUS_ROUTING_KEY,
)
from spectask.runtime.consumer import RequeueLater
from spectask.runtime.rpc import RpcClient, RpcError
from spectask.runtime.topology import ReplySpec, RpcRoute

CHECK_TIMEOUT = 5.0

# The protocol's getStatus operation (the runtime asks it itself, as a worker has no client)
STATUS_ROUTE = RpcRoute(
    operation="getStatus",
    exchange=STATUS_EXCHANGE,
    routing_key=STATUS_ROUTING_KEY,
    message_type=STATUS_REQUEST_MESSAGE_TYPE,
    model=models.StatusRequest,
    reply=ReplySpec(message_type=STATUS_REPLY_MESSAGE_TYPE, model=models.StatusReply),
)


class RepeatCheck:
    """Asks the store, through the status RPC, whether a task has a final outcome already."""

    def __init__(self, rpc: RpcClient, *, timeout: float = CHECK_TIMEOUT) -> None:
        self._rpc = rpc
        self._timeout = timeout

    async def final_state(self, task_id: str, message_type: str) -> models.TaskState | None:
        """The task's stored final state, or None; RequeueLater when no collector answers."""
        try:
            reply = await self._rpc.call(
                STATUS_ROUTE, {"task_ids": [task_id]}, timeout=self._timeout
            )
        except (RpcTimeoutError, PublishError, RpcError) as exc:
            raise RequeueLater(
                f"{message_type} has side effects and task {task_id} may have run already "
                f"(redelivered), but the task store cannot be asked ({exc}); it waits in its "
                "queue until a collector answers (start one: spectask collect)"
            ) from None
        assert isinstance(reply, models.StatusReply)
        state = next((view.state for view in reply.tasks if view.task_id == task_id), None)
        return state if state in FINAL_STATES else None
