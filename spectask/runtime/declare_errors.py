"""Why RabbitMQ refused to declare a queue, in one line a person can act on.

Two refusals have a cause outside spectask: a queue that exists with other arguments
(PRECONDITION_FAILED, the spec or SPECTASK_QUEUE_TYPE changed) and a queue whose record exists
but which no node runs (NOT_FOUND "home node ... is down or inaccessible"). The second happens
when a cluster member is down, and also on a single node killed -9 right after the queue was
first declared: its record survived the crash, its stream or quorum state did not, and it stays
`down` for good. A broker-side failure (INTERNAL_ERROR) is a third. Each becomes the cause
and the fix instead of aiormq's traceback.
"""

from __future__ import annotations

import re

from spectask.errors import BrokerUnavailableError, ConfigError

HOME_NODE = re.compile(r"home node '([^']+)' of durable queue '[^']+' in vhost '([^']*)'")


def refused(queue: str, exc: BaseException) -> ConfigError:
    """A PRECONDITION_FAILED declare: the queue exists with other arguments."""
    return ConfigError(
        f"RabbitMQ refused to declare queue {queue!r}: {exc}"
        "\n  hint: a queue that already exists keeps its type and arguments; if "
        "the spec or SPECTASK_QUEUE_TYPE changed them, drain and delete the queue "
        f"(rabbitmqctl delete_queue {queue}) so it is declared afresh"
    )


def failed(queue: str, exc: BaseException) -> BrokerUnavailableError:
    """INTERNAL_ERROR (541) on a declare: the broker's side failed, e.g. a quorum queue's
    without a majority of its nodes, which can neither answer nor refuse."""
    reason = exc.args[0] if exc.args else exc
    return BrokerUnavailableError(
        f"RabbitMQ failed declaring queue {queue!r} ({reason}): on a cluster, a quorum queue "
        "cannot work while a majority of its nodes is down"
        "\n  hint: `rabbitmqctl cluster_status` shows which nodes run; retry once they are back"
    )


def forget_expression(vhost: str, queue: str) -> str:
    """The Erlang a `rabbitmqctl eval` runs to drop the record of a queue no node runs.

    `rabbitmqctl delete_queue` and AMQP queue.delete both answer "not found" for such a
    queue on RabbitMQ 3.10, so its record must go by the internal call."""
    return (
        f'rabbit_amqqueue:internal_delete(rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>), '
        '<<"spectask">>).'
    )


def unavailable(queue: str, exc: BaseException) -> BrokerUnavailableError | None:
    """A NOT_FOUND declare of a queue no node runs; None for any other NOT_FOUND."""
    match = HOME_NODE.search(str(exc))
    if match is None:
        return None
    node, vhost = match.groups()
    vhost_flag = "" if vhost == "/" else f"-p {vhost} "
    return BrokerUnavailableError(
        f"RabbitMQ has queue {queue!r} (vhost {vhost!r}) but no node runs it: its home node "
        f"{node} is down, or the queue lost its state when that node crashed"
        f"\n  hint: start {node}; if it runs and `rabbitmqctl list_queues {vhost_flag}name "
        f"state` shows {queue} `down`, drop its record (what it held is lost) with "
        f"`rabbitmqctl eval '{forget_expression(vhost, queue)}'`, and the same for any other "
        "queue shown `down`: spectask declares them afresh"
    )
